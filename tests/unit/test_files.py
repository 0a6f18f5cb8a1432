"""contract/files.py: a file is written whole or not at all, and read block by block; and the one line count
(library/ag_news_csv.count_lines) that ingest's row estimate shares with the rows the Beam graph reads."""
from __future__ import annotations

import hashlib

import pytest

from components.ingest.executor import source_rows
from contract.data_config import IngestConfig
from contract.files import BLOCK_BYTES, file_sha256, replaced_atomically, write_json_atomic, write_text_atomic
from library.ag_news_csv import count_lines


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"version": 1})
    with pytest.raises(RuntimeError), replaced_atomically(path) as temporary:
        temporary.write_text('{"version": 2, "half', encoding="utf-8")
        raise RuntimeError("disk full")
    assert path.read_text(encoding="utf-8") == '{\n  "version": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_write_replaces_the_file_and_makes_its_folder(tmp_path):
    path = tmp_path / "new" / "report.md"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert path.read_text(encoding="utf-8") == "two"
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]


def test_file_sha256_reads_a_file_larger_than_a_block(tmp_path):
    data = bytes(range(256)) * (BLOCK_BYTES // 256 * 3 + 7)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "text, lines", [("", 0), ("a\n", 1), ("a", 1), ("a\nb", 2), ("a\nb\n", 2), ("\n\n", 2)]
)
def test_count_lines_counts_a_last_line_without_newline(tmp_path, text, lines):
    path = tmp_path / "lines.csv"
    path.write_bytes(text.encode())
    assert count_lines(str(path)) == lines


def test_ingest_estimates_the_rows_it_reads_also_without_a_final_newline(tmp_path):
    """source_rows (the runner's ETA and free-space estimate) once counted newlines only: one row short
    here."""
    (tmp_path / "train.csv").write_text('"1","a","b"\n"2","c","d"', encoding="utf-8")
    (tmp_path / "test.csv").write_text('"3","e","f"', encoding="utf-8")
    assert source_rows(IngestConfig(data=f"csv:{tmp_path}")) == 3


def test_a_span_is_reused_only_under_the_ingest_steps_derived_code_version(tmp_path):
    """Span reuse is keyed by library/code_version.py's version of the ingest executor (and everything it
    imports), the one the runner's cache key uses, not a hand-picked list of modules."""
    from components.ingest import span_reuse
    from components.ingest.spec import Source
    from contract.artifacts import Artifact
    from library import layouts
    from library.code_version import code_version, project_modules
    assert {"contract.files", "library.ag_news_csv", "library.tfrecord_io", "components.ingest.quarantine",
            "components.ingest.reading"} <= set(project_modules(span_reuse.INGEST_EXECUTOR))
    span = tmp_path / "2026-10-12.csv"
    span.write_text('"1","a","b"\n', encoding="utf-8")
    source, config = Source("2026-10-12", "train", str(span)), IngestConfig(data=f"csv:{tmp_path}")
    previous = tmp_path / "previous"

    def plan(code: str) -> str:
        key = span_reuse.reuse_key(source, file_sha256(span), config, code)
        layouts.write_sources(previous, {source.name: {"sha256": file_sha256(span), "reuse_key": key}})
        (layouts.source_folder(previous, source.name) / layouts.COUNTS_FILE).parent.mkdir(parents=True,
                                                                                       exist_ok=True)
        (layouts.source_folder(previous, source.name) / layouts.COUNTS_FILE).write_text("{}")
        examples = tmp_path / f"examples-{code}"
        _, status = span_reuse.plan_reuse([source], Artifact(name="examples", uri=previous), config,
                                           examples)
        return status[source.name]

    assert plan(code_version(span_reuse.INGEST_EXECUTOR)) == "reused"
    assert plan("0123456789abcdef") == "ingested"  # what an edit of any module it imports gives
