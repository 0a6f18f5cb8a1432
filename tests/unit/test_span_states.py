"""Fast checks of span naming and states (no training): mixed date spellings ordered by date, numbers by
value, names mixing numbers and dates refused in one line; the data-quality checks; the spans table of the
store and the states `spans` derives from it."""
from __future__ import annotations

import sqlite3
from collections import Counter

import pytest

from contract.artifacts import ComponentError
from library import drift, spans
from pipeline import metadata, span_states, store_schema


def _stream(folder, names):
    for name in names:
        (folder / name).mkdir()
        (folder / name / "train.csv").write_text("")
    return [span.name for span in spans.discover_spans(str(folder), r"\d{4}-\d{2}-\d{2}|\d+")]


def test_mixed_date_spellings_are_ordered_by_date(tmp_path):
    # By name (or numbers first) 20261208 would sort before 2026-12-01 and a window could drop the newest
    # span.
    assert _stream(tmp_path, ["20261208", "2026-12-01", "2026-11-24", "20261215"]) == [
        "2026-11-24", "2026-12-01", "20261208", "20261215"]
    found = [spans.Span(name, "") for name in ("2026-12-01", "20261208")]
    window = spans.select_window(
        found, num_spans=1, min_spans=1, skip_recent=0, exclude=(), newest="", where="t"
    )
    assert [span.name for span in window] == ["20261208"]


def test_number_only_streams_keep_their_numeric_order(tmp_path):
    assert _stream(tmp_path, ["0010", "0007", "0009", "12"]) == ["0007", "0009", "0010", "12"]


def test_names_mixing_numbers_and_dates_are_refused_in_one_line(tmp_path):
    with pytest.raises(ComponentError) as error:
        _stream(tmp_path, ["0007", "2026-12-01"])
    message = str(error.value)
    assert "\n" not in message and "mix dates and other names (2026-12-01 beside 0007)" in message


def test_held_out_spans_leave_the_window_and_a_pinned_one_says_why():
    found = [spans.Span(name, "") for name in ("0001", "0002", "0003")]
    settings = {"num_spans": 0, "min_spans": 1, "skip_recent": 0, "exclude": (), "where": "t"}
    window = spans.select_window(found, newest="", held_out=("0002",), **settings)
    assert [span.name for span in window] == ["0001", "0003"]
    with pytest.raises(ComponentError) as error:
        spans.select_window(found, newest="0002", held_out=("0002",), **settings)
    assert "quarantined or rejected" in str(error.value)


def test_quality_checks():
    keys = Counter({"a": 3, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1, "g": 1, "h": 1})  # 10 rows, 2 repeats
    thresholds = {"row_count_change": 0.5, "duplicate_share": 0.05, "test_overlap_share": 0.01}
    rows = {row["check"]: row for row in drift.quality(keys, {"b"}, [20, 20], thresholds)}
    assert rows["duplicate_rows"]["value"] == pytest.approx(0.2) and rows["duplicate_rows"]["failed"]
    assert rows["test_overlap"]["value"] == pytest.approx(0.1) and rows["test_overlap"]["failed"]
    assert rows["row_count_change"]["value"] == pytest.approx(0.5) and not rows["row_count_change"]["failed"]
    assert not rows["row_count_change"]["refuses"] and not rows["empty_span"]["failed"]
    empty = {row["check"]: row for row in drift.quality(Counter(), set(), [20], thresholds)}
    assert empty["empty_span"]["failed"] and empty["empty_span"]["refuses"]
    assert "row_count_change" not in drift.MEASURES  # a half-size export is not drift (it asks for no search)
    assert drift.text_key("A  Title", "Body") == drift.text_key("a title", "body")


def test_the_spans_table_and_the_states_derived_from_it(tmp_path):
    store = metadata.MetadataStore(tmp_path / "metadata.sqlite")
    store.save_span("0001", sha256="aa", state="quarantined", reason="drift")
    store.save_span("0001", row_count=5)  # an update keeps the other columns
    row = store.spans()["0001"]
    assert (row["state"], row["reason"], row["row_count"]) == ("quarantined", "drift", 5)
    assert span_states.state_of(row, "aa", False) == "quarantined"
    assert span_states.state_of(row, "bb", False) == "new"  # corrected since: checked again
    assert span_states.state_of(None, "aa", False) == "new"
    assert span_states.state_of(row, "aa", True) == "excluded"
    store.save_span("0001", state="rejected")
    # for good, whatever the bytes
    assert span_states.state_of(store.spans()["0001"], "bb", False) == "rejected"
    store.close()
    db = sqlite3.connect(tmp_path / "metadata.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == store_schema.SCHEMA_VERSION == 3


def test_a_span_with_bad_rows_is_measured_by_its_own_share():
    keys = Counter({f"row{i}": 1 for i in range(97)})
    rows = {row["check"]: row for row in drift.quality(keys, set(), [], {"duplicate_share": 0.05,
            "test_overlap_share": 0.01, "row_count_change": 0.5, "bad_row_share": 0.01}, bad_rows=3)}
    assert rows["bad_rows"]["value"] == pytest.approx(0.03) and rows["bad_rows"]["failed"]
    assert rows["bad_rows"]["refuses"]


def test_a_corrupted_span_of_a_stream_is_refused_by_validate_not_failed_by_ingest(
    tmp_path, sample_dir, runtime
):
    """A real ingest and validate of a stream whose second span has 5% bad rows (labels out of range): ingest
    publishes (a stream's spans are not held to ingest.max_bad_row_fraction), validate refuses that span alone
    with reason bad_rows (so the pipeline quarantines it), and the clean span is not refused."""
    from components.ingest import executor as ingest
    from components.validate import executor as validate
    from contract.data_config import IngestConfig, ValidateConfig
    lines = (sample_dir / "train.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    stream = tmp_path / "stream"
    for name, rows in (
        ("2026-12-01", lines[:200]),
        ("2026-12-08", lines[200:390] + ['"9","bad","row"\n'] * 10),
    ):
        (stream / name).mkdir(parents=True)
        (stream / name / "train.csv").write_text("".join(rows), encoding="utf-8")
    (stream / "test.csv").write_bytes((sample_dir / "test.csv").read_bytes())
    examples = ingest.run({}, tmp_path / "ingest", IngestConfig(data=f"csv:{stream}"), runtime)["examples"]
    with pytest.raises(ComponentError) as refusal:
        validate.run({"examples": examples}, tmp_path / "validate", ValidateConfig(), runtime)
    refused = refusal.value.details["refused"]
    assert [(row["span"], row["reason"]) for row in refused] == [("2026-12-08", "bad_rows")]
    assert refused[0]["quality"]["bad_rows"] == pytest.approx(10 / 200)


def test_a_quarantined_span_is_left_out_of_the_next_ingest_until_its_file_changes(
    tmp_path, sample_dir, runtime
):
    """A real ingest of a stream with the store's span states filled in (what `run` and `retrain` do first):
    the span the store holds quarantined for its current bytes is not read; once its file changes it is."""
    from components.ingest import executor as ingest
    from contract.config_loading import load_config
    from contract.files import file_sha256
    from library import layouts
    lines = (sample_dir / "train.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    stream, root = tmp_path / "stream", tmp_path / "root"
    names = ("2026-12-01", "2026-12-08", "2026-12-15")
    for index, name in enumerate(names):
        (stream / name).mkdir(parents=True)
        (stream / name / "train.csv").write_text(
            "".join(lines[index * 100 : (index + 1) * 100]), encoding="utf-8"
        )
    (stream / "test.csv").write_bytes((sample_dir / "test.csv").read_bytes())
    store = metadata.MetadataStore(root / "metadata.sqlite")
    store.save_span(names[1], sha256=file_sha256(stream / names[1] / "train.csv"), state="quarantined",
                    reason="drift")
    store.close()

    def ingested_window(out: str) -> list[str]:
        config = span_states.resolve(
            load_config(flags={"pipeline.root": str(root), "ingest.data": f"csv:{stream}"}),
            log=lambda _: None,
        )
        examples = ingest.run({}, tmp_path / out, config.ingest, runtime)["examples"]
        return layouts.read_counts(examples.uri)["window"]

    assert ingested_window("first") == [names[0], names[2]]
    with open(stream / names[1] / "train.csv", "a", encoding="utf-8") as handle:  # corrected: checked again
        handle.write(lines[300])
    assert ingested_window("second") == list(names)
