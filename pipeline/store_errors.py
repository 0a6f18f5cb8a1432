"""The metadata store's errors, each with a one-line message saying what is wrong and what to do, and how a
failed SQLite operation maps onto one (store_error). Split from pipeline/metadata.py, which raises them."""
from __future__ import annotations

from pathlib import Path

from contract.disk import disk_full, disk_full_message, free_bytes, not_writable, not_writable_message


class StoreError(RuntimeError):
    """The metadata store could not be used; the message says why and what to do (one line)."""


class StoreUnreadable(StoreError):
    """The metadata store file is not a readable SQLite database of this pipeline (garbage, truncated)."""


class StoreFull(StoreError):
    """The filesystem holding the store is full: the store itself is intact."""


class StoreNotWritable(StoreError):
    """The system refuses writes to the store (permissions, a read-only mount): the store itself is intact."""


def unreadable_message(path: Path, error: BaseException) -> str:
    return (
        f"the metadata store {path} is unreadable ({error}): move it aside (mv {path} {path}.broken) "
        "and run again; a new store is started and every step is recomputed (pushed versions stay served)"
    )


# under this much free space, an I/O error of the store is taken for a full disk
LOW_SPACE_BYTES = 1 << 20


def store_error(path: Path, error: BaseException) -> StoreError:
    """The one-line error for a failed store operation. Only a store SQLite itself finds damaged (not a
    database, malformed) is called unreadable, with the advice to move it aside: a full disk, a refused
    write or a busy database leave the file intact, and discarding it would throw away the lineage, the cache
    and the regression baseline."""
    intact = "; the store itself is intact (keep it)"
    name = getattr(error, "sqlite_errorname", "")
    if disk_full(error) or (name.startswith("SQLITE_IOERR") and free_bytes(path) < LOW_SPACE_BYTES):
        # (SQLite reports a -shm or -wal file it cannot grow on a full disk as an I/O error)
        return StoreFull(disk_full_message(path, f"writing the metadata store {path}") + intact)
    if not_writable(error):
        return StoreNotWritable(
            not_writable_message(path, f"writing the metadata store {path}", error) + intact
        )
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return StoreUnreadable(unreadable_message(path, error))
    return StoreError(f"the metadata store {path} could not be used ({error}); it was not changed: run again "
                      "(if another program holds it, wait for it to finish)")
