"""Files written whole or not at all, and files read block by block. Standard library only: the runner, the
components, their Beam workers and the apps all write and hash with these.

Nothing stored is half-written: every writer here writes a hidden temporary file beside its target and renames
it into place (one rename, atomic on a local or mounted filesystem), so a reader sees the old file or the new
one, and a failed write (a full disk, an exception, Ctrl-C) leaves the old one and no temporary behind."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import IO, Any, Iterator

BLOCK_BYTES = 1 << 20


@contextlib.contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to (hidden, and never matching part-* or *.json: no
    reader globs it); when the block ends without an error it replaces `path`, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with replaced_atomically(path) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with replaced_atomically(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Indented JSON with sorted keys (what the stores and reports keep), written atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_blocks(handle: IO[bytes], size: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The rest of an open binary file, in blocks of at most `size` bytes: a file of any size in bounded
    memory."""
    yield from iter(lambda: handle.read(size), b"")


def update_digest(digest: Any, handle: IO[bytes]) -> None:
    """Feeds the rest of an open binary file to a hashlib digest, block by block."""
    for block in read_blocks(handle):
        digest.update(block)


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        update_digest(digest, handle)
    return digest.hexdigest()
