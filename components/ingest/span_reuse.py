"""Ingest's span reuse: in a stream of spans, a span whose train.csv is unchanged since the previous ingest
(the `previous_examples` input) is not read again; its folder of that artifact is hard-linked into place.

A span is reused only when its reuse key matches: the span's name and source split, its file's SHA-256, the
eval fraction, and the ingest step's code version (library/code_version.py: its executor and every project
module that imports, as the runner's cache key has it), so a reused span holds exactly what ingesting it now
would.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from components.ingest.spec import Source
from contract.artifacts import Artifact
from contract.data_config import IngestConfig
from contract.files import file_sha256
from library.code_version import code_version
from library.layouts import COUNTS_FILE, read_sources, source_folder

# The module whose code version (with every project module it imports) decides a span's example files.
INGEST_EXECUTOR = "components.ingest.executor"


def reuse_key(source: Source, sha256: str, config: IngestConfig, code: str) -> str:
    settings = [source.name, source.split, sha256, config.eval_fraction, code]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()


def _link_tree(source: Path, destination: Path) -> None:
    """Hard-links every file of `source` into `destination` (a copy where links are impossible): the files of
    a published artifact never change, so two artifacts may share them."""
    for path in sorted(source.rglob("*")):
        target = destination / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def plan_reuse(stream_sources: list[Source], previous: Artifact | None, config: IngestConfig,
                examples_dir: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """({source name: {sha256, reuse_key}}, {source name: status}) with status ingested | reused |
    re-ingested (its files changed since the previous ingest); reused sources are linked into place."""
    code = code_version(INGEST_EXECUTOR)
    before = read_sources(previous.uri) if previous is not None else {}
    records, status = {}, {}
    for source in stream_sources:
        sha256 = file_sha256(source.path)
        key = reuse_key(source, sha256, config, code)
        records[source.name] = {"sha256": sha256, "reuse_key": key}
        earlier = before.get(source.name)
        kept = source_folder(previous.uri, source.name) if previous is not None else None
        if earlier and earlier["reuse_key"] == key and (kept / COUNTS_FILE).is_file():
            _link_tree(kept, source_folder(examples_dir, source.name))
            status[source.name] = "reused"
        else:
            status[source.name] = "re-ingested" if earlier and earlier["sha256"] != sha256 else "ingested"
    return records, status
