"""Telling a full disk and a write the system refuses apart from a broken file, and saying which filesystem.

Every layer meets the same few faults under different names: OSError with errno ENOSPC or EDQUOT, SQLite's
"database or disk is full" (SQLITE_FULL), TensorFlow's ResourceExhaustedError "No space left on device", Beam
re-raising any of them as a RuntimeError that only keeps the text. `disk_full(error)` and
`not_writable(error)` look through the exception's chain and its text, so a caller can say "disk full" or
"permission denied" instead of "corrupt", and `filesystem_line(path)` names the filesystem (mount point, free
space) the user has to clear. Standard library only: every layer may use it.
"""
from __future__ import annotations

import errno
import os
import re
import sqlite3
from pathlib import Path
from typing import Iterator

from contract.units import format_size

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_REFUSED_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}
_FULL_TEXT = re.compile(r"no space left on device|database or disk is full|disk quota exceeded|\[Errno 28\]",
                        re.IGNORECASE)
_REFUSED_TEXT = re.compile(r"read-only file system|permission denied|readonly database|\[Errno (13|30)\]",
                           re.IGNORECASE)
_ABSOLUTE_PATH = re.compile(r"(/[^\s'\"\],:;()]+)")


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def disk_full(error: BaseException) -> bool:
    """The error, or one it was raised from, is a full filesystem (or an exceeded quota)."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in _FULL_ERRNOS:
            return True
        if isinstance(link, sqlite3.Error) and getattr(link, "sqlite_errorname", "") == "SQLITE_FULL":
            return True
        if _FULL_TEXT.search(str(link)):
            return True
    return False


def not_writable(error: BaseException) -> bool:
    """The error is the system refusing a write: permission denied or a read-only filesystem."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in _REFUSED_ERRNOS:
            return True
        name = getattr(link, "sqlite_errorname", "") if isinstance(link, sqlite3.Error) else ""
        if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
            return True
        if _REFUSED_TEXT.search(str(link)):
            return True
    return False


def error_paths(error: BaseException) -> list[Path]:
    """The files the error is about: an OSError's filenames, and the absolute paths in its text whose folder
    exists (Beam and TensorFlow keep only the text; shutil.copytree lists source and target)."""
    paths = []
    for link in _chain(error):
        if isinstance(link, OSError):
            paths += [Path(os.fsdecode(name)) for name in (link.filename, link.filename2) if name]
        for candidate in _ABSOLUTE_PATH.findall(str(link)):
            path = Path(candidate)
            # A file path, even of a temporary file removed since; not a device name like /job:localhost.
            if len(path.parts) > 2 and Path(*path.parts[:2]).exists():
                paths.append(path)
    return paths


def full_path(error: BaseException, default: Path) -> Path:
    """Of the paths the error names and `default`, the one whose filesystem has the least free space: where
    the failed write most likely ran out of room."""
    return min([*error_paths(error), Path(default)], key=_free_or_none)


def _free_or_none(path: Path) -> float:
    try:
        return free_bytes(path)
    except OSError:
        return float("inf")


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding `path` (or its nearest
    parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def filesystem_line(path: Path) -> str:
    """'the filesystem at /mnt/data (holding PATH) has 12.0 KiB free of 300.0 KiB'."""
    path = Path(path).absolute()
    try:
        mount = mount_point(path)
        stats = os.statvfs(mount)
    except OSError:
        return f"the filesystem holding {path}"
    total = stats.f_blocks * stats.f_frsize
    return (f"the filesystem at {mount} (holding {path}) has {format_size(free_bytes(mount))} free of "
            f"{format_size(total)}")


def disk_full_message(path: Path, what: str) -> str:
    """One line for a full disk: what could not be written, which filesystem, what to do."""
    return f"disk full while {what}: {filesystem_line(path)}; free some space there and run again"


def not_writable_message(path: Path, what: str, error: BaseException) -> str:
    reason = "read-only filesystem" if any(
        isinstance(link, OSError) and link.errno == errno.EROFS or "read-only" in str(link).lower()
        for link in _chain(error)) else "permission denied"
    return f"cannot write while {what}: {reason} ({path}); fix the permissions or the mount and run again"
