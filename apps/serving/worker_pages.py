"""The metrics pages of `serve --workers N`, shared: each worker keeps a copy of its own page in a slot of one
anonymous shared memory (a memfd the supervisor creates; no file anywhere), so that whichever worker answers a
scrape shows every worker's series, each labelled `worker`.

A worker rewrites its slot every PUBLISH_SECONDS (and first once it listens, which tells the supervisor it is
ready); the page a scrape gets is the answering worker's own page now and the others' copies, at most that
old. A slot is a sequence number (odd while being written; 0: nothing yet), a length and the page's bytes: a
reader that sees the number odd or changed while it copied reads again, so a page is never read half-written.
"""
from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass

# A worker's page is a few KB; one larger than this is cut (its last family then fails to parse and that
# worker's copy is left out of the merged page rather than shown wrong).
SLOT_BYTES = 1 << 20
PUBLISH_SECONDS = 1.0
_HEADER = struct.Struct("<QQ")  # sequence number, length


class SharedPages:
    """`count` slots of SLOT_BYTES in one shared memory, by worker index."""

    def __init__(self, fd: int, count: int):
        self.fd, self.count = fd, count
        self.memory = mmap.mmap(fd, count * SLOT_BYTES)

    @classmethod
    def create(cls, count: int) -> SharedPages:
        """A new shared memory (the supervisor's); its fd is handed to the workers."""
        fd = os.memfd_create("agnews-serve-metrics")
        os.ftruncate(fd, count * SLOT_BYTES)
        return cls(fd, count)

    def write(self, index: int, page: bytes) -> None:
        base = index * SLOT_BYTES
        page = page[: SLOT_BYTES - _HEADER.size]
        sequence, _ = _HEADER.unpack_from(self.memory, base)
        _HEADER.pack_into(self.memory, base, sequence + 1, 0)
        self.memory[base + _HEADER.size : base + _HEADER.size + len(page)] = page
        _HEADER.pack_into(self.memory, base, sequence + 2, len(page))

    def read(self, index: int) -> bytes:
        """The worker's last page; b"" before its first, or when it is being rewritten for over 100 ms."""
        base = index * SLOT_BYTES
        for _ in range(100):
            sequence, length = _HEADER.unpack_from(self.memory, base)
            if sequence % 2 == 0:
                page = bytes(self.memory[base + _HEADER.size : base + _HEADER.size + length])
                if _HEADER.unpack_from(self.memory, base)[0] == sequence:
                    return page
            time.sleep(0.001)
        return b""

    def published(self, index: int) -> bool:
        """Whether the worker in this slot has written its page: it is listening."""
        return _HEADER.unpack_from(self.memory, index * SLOT_BYTES)[0] > 0

    def clear(self, index: int) -> None:
        """Empties a slot before a new worker takes it (its previous worker has exited)."""
        _HEADER.pack_into(self.memory, index * SLOT_BYTES, 0, 0)


@dataclass(frozen=True)
class _Families:
    """What prometheus_client's generate_latest needs of a registry: collect()."""
    families: tuple

    def collect(self):
        return iter(self.families)


def merged_page(pages: dict[int, bytes]) -> bytes:
    """One Prometheus text page of every worker's page ({worker index: page}), each sample labelled with its
    worker. A page that does not parse is left out."""
    from prometheus_client import generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    for index, page in sorted(pages.items()):
        try:
            parsed = list(text_string_to_metric_families(page.decode()))
        except ValueError:
            continue
        for family in parsed:
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            merged.samples.extend(sample._replace(labels={**sample.labels, "worker": str(index)})
                                  for sample in family.samples)
    return generate_latest(_Families(tuple(families.values())))
