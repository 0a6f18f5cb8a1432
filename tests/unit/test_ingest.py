"""The ingest component on real Beam: the committed sample, split determinism, quarantine of every kind of bad
row, the bad-row limit, the TFDS source (mocked by tfds.testing.mock_data) and clear source errors."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import tensorflow as tf

from components.ingest import executor as ingest
from components.ingest import reading as ingest_reading
from contract.artifacts import ComponentError
from contract.data_config import IngestConfig
from library import ag_news_csv, layouts


def read_split(examples_dir: Path, split: str) -> Counter:
    """Multiset of (label, title, description) in one split's TFRecords, read with plain TensorFlow."""
    files = layouts.examples_files(examples_dir, split)
    assert files, f"no example files in {layouts.split_dir(examples_dir, split)}"
    rows = Counter()
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        assert set(feature) == {"title", "description", "label"}
        rows[(feature["label"].int64_list.value[0], feature["title"].bytes_list.value[0].decode("utf-8"),
              feature["description"].bytes_list.value[0].decode("utf-8"))] += 1
    return rows


def csv_rows(path: Path) -> Counter:
    """The expected rows of a clean AG News CSV file, parsed with Python's csv module."""
    with open(path, newline="", encoding="utf-8") as handle:
        return Counter((int(c) - 1, title, description) for c, title, description in csv.reader(handle))


def labels_of(rows: Counter) -> Counter:
    counts = Counter()
    for (label, _, _), count in rows.items():
        counts[label] += count
    return counts


def write_source(folder: Path, train: bytes, test: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_bytes(train)
    (folder / "test.csv").write_bytes(test)
    return folder


def good_line(label: int, title: str, description: str) -> bytes:
    quote = lambda text: '"' + text.replace('"', '""') + '"'  # noqa: E731
    return f'"{label + 1}",{quote(title)},{quote(description)}\n'.encode("utf-8")


# ---------------------------------------------------------------------------------------------- the sample


def test_sample_ingests_every_row_with_its_class_balance(ingested_sample, sample_dir):
    examples = Path(ingested_sample.uri)
    train, evaluation, test = (read_split(examples, split) for split in ("train", "eval", "test"))

    assert sum(train.values()) + sum(evaluation.values()) == 1200
    assert sum(test.values()) == 400
    assert train + evaluation == csv_rows(sample_dir / "train.csv")
    assert test == csv_rows(sample_dir / "test.csv")
    assert labels_of(train + evaluation) == {0: 300, 1: 300, 2: 300, 3: 300}
    assert labels_of(test) == {0: 100, 1: 100, 2: 100, 3: 100}
    assert not set(train) & set(evaluation)

    props = ingested_sample.properties
    assert (props["train_rows"], props["eval_rows"], props["test_rows"]) == (
        sum(train.values()), sum(evaluation.values()), 400)
    assert props["quarantined_rows"] == 0 and props["quarantined_by_reason"] == {}
    assert props["source"] == f"csv:{sample_dir.resolve()}"
    counts = layouts.read_counts(examples)
    assert counts["rows_read"] == 1600
    assert counts["splits"] == {"train": props["train_rows"], "eval": props["eval_rows"], "test": 400}
    assert layouts.quarantine_file(examples).read_text() == ""


def test_splits_depend_on_row_content_not_position(ingested_sample, sample_dir, tmp_path, runtime):
    # A second run over the same rows in reverse order must put every row in the same split.
    reversed_source = write_source(
        tmp_path / "reversed",
        b"".join(reversed((sample_dir / "train.csv").read_bytes().splitlines(keepends=True))),
        b"".join(reversed((sample_dir / "test.csv").read_bytes().splitlines(keepends=True))))
    rerun = ingest.run({}, tmp_path / "out", IngestConfig(data=f"csv:{reversed_source}"), runtime)["examples"]

    for split in ("train", "eval", "test"):
        assert read_split(rerun.uri, split) == read_split(ingested_sample.uri, split), split


def test_eval_fraction_follows_the_config(ingested_sample, sample_dir, tmp_path, runtime):
    default_eval = read_split(ingested_sample.uri, "eval")
    assert 0.03 <= sum(default_eval.values()) / 1200 <= 0.07  # config default 0.05; 3 sigma on 1,200 rows

    larger = ingest.run({}, tmp_path / "out", IngestConfig(data=f"csv:{sample_dir}", eval_fraction=0.3),
                        runtime)["examples"]
    larger_eval = read_split(larger.uri, "eval")
    assert 0.26 <= sum(larger_eval.values()) / 1200 <= 0.34
    assert set(default_eval) <= set(larger_eval)  # a content-hash threshold: raising it only adds rows
    assert larger.properties["train_rows"] + larger.properties["eval_rows"] == 1200


# The eval rows of a CSV file as a fresh process assigns them (ingest's own split function, nothing else).
EVAL_ROWS_SCRIPT = """
import csv, json, sys
from components.ingest.executor import split_of
from contract.config import IngestConfig
from library.ag_news_csv import GoodRow
with open(sys.argv[1], newline="", encoding="utf-8") as handle:
    rows = [GoodRow("train", int(c) - 1, title, description) for c, title, description in csv.reader(handle)]
fraction = IngestConfig().eval_fraction
print(json.dumps([[r.label, r.title, r.description] for r in rows if split_of(r, fraction) == "eval"]))
"""


def test_a_row_lands_in_the_same_split_in_every_process(ingested_sample, sample_dir):
    # Two fresh processes with different string-hash seeds choose the same eval rows as the Beam ingest did
    # here, so a rerun (or a worker process) never moves a row between train and eval.
    chosen = []
    for hash_seed in ("1", "2"):
        completed = subprocess.run([sys.executable, "-c", EVAL_ROWS_SCRIPT, str(sample_dir / "train.csv")],
                                   capture_output=True, text=True, timeout=120, check=True,
                                   env={**os.environ, "PYTHONHASHSEED": hash_seed})
        chosen.append(Counter(tuple(row) for row in json.loads(completed.stdout)))
    ingested_eval = read_split(ingested_sample.uri, "eval")
    assert chosen[0] == chosen[1] == ingested_eval
    assert 30 <= sum(ingested_eval.values()) <= 90  # about 5% of 1,200 rows


# ---------------------------------------------------------------------------------------------- bad rows


def test_every_kind_of_bad_row_is_quarantined_and_every_good_row_arrives(sample_dir, tmp_path, runtime):
    sample_lines = (sample_dir / "train.csv").read_bytes().splitlines(keepends=True)
    huge_description = "word " * 200_000  # 1 MB
    long_bad_line = b'"2","' + b"y" * 5000 + b'"\n'  # two columns and 5 KB: the record keeps 1 KB of it
    # (line bytes, expected good row or the expected quarantine reason)
    train_lines = [
        (sample_lines[0], None),
        (b'"3","only a title"\n', "wrong_column_count"),
        (b'"3","title","description","extra"\n', "wrong_column_count"),
        (b'"0","class zero","d"\n', "class_out_of_range"),
        (b'"5","class five","d"\n', "class_out_of_range"),
        (b'"x","class x","d"\n', "class_not_integer"),
        (b'"2.0","class 2.0","d"\n', "class_not_integer"),
        (b'"2","",""\n', "empty_title_and_description"),
        (b'"2","  ","\t"\n', "empty_title_and_description"),
        (b'"1","caf\xe9 in latin-1","d"\n', "undecodable_bytes"),
        (b'"4","title never closed,"description"\n', "unbalanced_quotes"),
        (b'"4","quote never closed,description\n', "unbalanced_quotes"),
        (b'"4","after the broken line","still arrives"\n', (3, "after the broken line", "still arrives")),
        (b"\n", "blank_line"),
        (b'"1","crlf title","crlf description"\r\n', (0, "crlf title", "crlf description")),
        (
            '"2","Zürich 東京 — café","naïve façade"\n'.encode("utf-8"),
            (1, "Zürich 東京 — café", "naïve façade"),
        ),
        (b'"3","","only a description"\n', (2, "", "only a description")),
        (b'"4","only a title",""\n', (3, "only a title", "")),
        (b'"1","He said ""hi"", twice","a, b"\n', (0, 'He said "hi", twice', "a, b")),
        (b"2,bare fields,no quotes\n", (1, "bare fields", "no quotes")),
        (
            f'"1","a huge description","{huge_description}"\n'.encode(),
            (0, "a huge description", huge_description),
        ),
        (long_bad_line, "wrong_column_count"),
        *((line, None) for line in sample_lines[1:40]),
    ]
    test_lines = [
        (good_line(0, "test row", "one"), (0, "test row", "one")),
        (b'"9","class nine","d"\n', "class_out_of_range"),
        (b'"4","last line without a newline","d"', (3, "last line without a newline", "d")),
    ]
    source = write_source(tmp_path / "source", b"".join(line for line, _ in train_lines),
                          b"".join(line for line, _ in test_lines))
    examples = ingest.run({}, tmp_path / "out", IngestConfig(data=f"csv:{source}", max_bad_row_fraction=0.5),
                          runtime)["examples"]

    def expected(lines, file_name):
        good, bad = Counter(), []
        for number, (line, outcome) in enumerate(lines, start=1):
            if outcome is None:
                good.update(csv_rows_from_bytes(line))
            elif isinstance(outcome, tuple):
                good[outcome] += 1
            else:
                bad.append((file_name, number, outcome))
        return good, bad

    good_train, bad_train = expected(train_lines, "train.csv")
    good_test, bad_test = expected(test_lines, "test.csv")
    assert read_split(examples.uri, "train") + read_split(examples.uri, "eval") == good_train
    assert read_split(examples.uri, "test") == good_test

    records = [json.loads(line) for line in layouts.quarantine_file(examples.uri).read_text().splitlines()]
    assert [(Path(r["source"]).name, r["line"], r["reason"]) for r in records] == bad_train + bad_test
    by_line = {(Path(r["source"]).name, r["line"]): r for r in records}
    assert by_line[("train.csv", 6)]["raw"] == '"x","class x","d"'
    assert by_line[("train.csv", 6)]["source_split"] == "train"
    assert by_line[("train.csv", 10)]["raw"] == '"1","caf\\xe9 in latin-1","d"'
    assert by_line[("train.csv", 14)]["raw"] == ""
    assert by_line[("test.csv", 2)]["raw"] == '"9","class nine","d"'
    long_record = by_line[("train.csv", 22)]
    assert (
        long_record["raw"] == long_bad_line[:1024].decode()
        and long_record["raw_bytes"] == len(long_bad_line) - 1
    )

    expected_reasons = Counter(reason for _, _, reason in bad_train + bad_test)
    assert examples.properties["quarantined_by_reason"] == dict(expected_reasons)
    assert examples.properties["quarantined_rows"] == len(bad_train) + len(bad_test)
    counts = layouts.read_counts(examples.uri)
    assert counts["quarantined_by_reason"] == dict(expected_reasons)
    assert counts["rows_read"] == len(train_lines) + len(test_lines)
    assert set(expected_reasons) == set(ag_news_csv.REASONS)  # this test covers every reason


def csv_rows_from_bytes(line: bytes) -> Counter:
    return Counter((int(c) - 1, t, d) for c, t, d in csv.reader([line.decode("utf-8")]))


def test_too_many_bad_rows_fail_with_the_first_bad_rows_in_the_message(tmp_path, runtime, monkeypatch):
    # Small read chunks: the line numbers must stay right when a file is read as many parallel pieces.
    # bad rows start in chunks that start mid-line
    monkeypatch.setattr(ingest_reading, "READ_CHUNK_BYTES", 47)
    train = b"".join(good_line(i % 4, f"title {i}", f"description {i}") for i in range(10))
    train += b'"7","bad class","d"\n' + good_line(0, "t", "d") + b'"1","two columns"\n'
    source = write_source(tmp_path / "source", train, good_line(1, "test", "row"))

    with pytest.raises(ComponentError) as failure:
        ingest.run({}, tmp_path / "out", IngestConfig(data=f"csv:{source}"), runtime)
    message = str(failure.value)
    assert "2 of 14 rows are bad (14.29%)" in message
    assert "max_bad_row_fraction = 1.00%" in message
    assert "class_out_of_range=1, wrong_column_count=1" in message
    assert re.search(r"train\.csv line 11: class_out_of_range .*bad class", message)
    assert re.search(r"train\.csv line 13: wrong_column_count .*two columns", message)
    assert layouts.QUARANTINE_FILE in message


def test_a_runner_that_loses_rows_fails_the_step_with_one_line(sample_dir, tmp_path, runtime, monkeypatch):
    # The in-process DirectRunner, made to lose the 5th line of every chunk it reads, as a faulty runner
    # would.
    read_lines = ingest_reading.chunk_lines
    monkeypatch.setattr(ingest_reading, "chunk_lines", lambda chunk, before: (
        line for number, line in enumerate(read_lines(chunk, before)) if number != 4))
    with pytest.raises(ComponentError) as raised:
        ingest.run({}, tmp_path / "out", IngestConfig(data=f"csv:{sample_dir}"), runtime)
    message = str(raised.value)
    found = re.match(
        r"ingest: the Beam runner returned ([\d,]+) rows for the ([\d,]+) lines of (.+); nothing", message
    )
    assert found and "\n" not in message, message
    lines = sum(1 for _ in open(found[3], "rb"))
    assert (found[1], found[2]) == (f"{lines - 1:,}", f"{lines:,}")


def test_line_numbers_are_right_for_every_chunk_size(tmp_path):
    content = b'first\r\n\n"third, a longer line"\nfourth\n\n\nseventh without newline'
    path = tmp_path / "lines.csv"
    path.write_bytes(content)
    expected = list(enumerate(content.splitlines(keepends=True), start=1))
    for chunk_bytes in range(1, len(content) + 2):
        chunks = ag_news_csv.plan_chunks(str(path), "train", chunk_bytes)
        counts = [ag_news_csv.count_newlines(chunk) for chunk in chunks]
        lines = []
        for chunk in chunks:
            before = sum(n for _, start, n in counts if start < chunk.start)
            lines += list(ag_news_csv.chunk_lines(chunk, before))
        assert lines == expected, f"chunk size {chunk_bytes}"


# ---------------------------------------------------------------------------------------------- source errors


def test_missing_folder_or_file_is_a_clear_error(tmp_path, runtime):
    with pytest.raises(ComponentError, match=r"data folder .*nowhere does not exist"):
        ingest.run({}, tmp_path / "out", IngestConfig(data=f"csv:{tmp_path / 'nowhere'}"), runtime)
    half = tmp_path / "half"
    half.mkdir()
    (half / "train.csv").write_bytes(good_line(0, "t", "d"))
    with pytest.raises(ComponentError, match=r"test\.csv not found in .*half"):
        ingest.run({}, tmp_path / "out2", IngestConfig(data=f"csv:{half}"), runtime)
    with pytest.raises(ComponentError, match=r"test\.csv not found"):
        ingest.external_fingerprint(IngestConfig(data=f"csv:{half}"))


def test_external_fingerprint_follows_the_csv_content(tmp_path, sample_dir):
    source = write_source(tmp_path / "source", (sample_dir / "train.csv").read_bytes(),
                          (sample_dir / "test.csv").read_bytes())
    config = IngestConfig(data=f"csv:{source}")
    first = ingest.external_fingerprint(config)
    assert first == ingest.external_fingerprint(config)
    # same bytes, other place
    assert first == ingest.external_fingerprint(IngestConfig(data=f"csv:{sample_dir}"))
    (source / "test.csv").write_bytes((sample_dir / "test.csv").read_bytes() + good_line(0, "new", "row"))
    assert ingest.external_fingerprint(config) != first


def test_tfds_that_cannot_download_names_the_csv_flag(tmp_path, runtime, offline):
    config = IngestConfig(data="tfds", tfds_data_dir=str(tmp_path / "tfds"))  # empty: TFDS must download
    started = time.monotonic()
    with pytest.raises(ComponentError) as failure:
        ingest.run({}, tmp_path / "out", config, runtime)
    message = str(failure.value)
    assert "--data csv:PATH" in message and "ag_news_subset" in message
    assert time.monotonic() - started < 30  # TFDS alone retries an unreachable host for over 3 minutes
    assert "\n" not in message


# ---------------------------------------------------------------------------------------------- TFDS source


@pytest.fixture
def offline_tfds_mock(monkeypatch):
    """mock_data replaces TFDS' download and data; the reachability probe of the real download host is
    replaced with it (it would fail here, where there is no network)."""
    monkeypatch.setattr(ingest_reading, "_check_download_host", lambda builder: None)


def test_tfds_source_with_mock_data(tmp_path, runtime, offline_tfds_mock):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        examples = ingest.run({}, tmp_path / "out", IngestConfig(data="tfds"), runtime)["examples"]
    train_source = read_split(examples.uri, "train") + read_split(examples.uri, "eval")
    test = read_split(examples.uri, "test")
    assert sum(train_source.values()) == 12 and sum(test.values()) == 12
    assert set(labels_of(train_source + test)) <= {0, 1, 2, 3}
    assert examples.properties["source"] == "tfds:ag_news_subset"


def test_tfds_rows_land_in_their_splits_and_bad_rows_are_quarantined(tmp_path, runtime, offline_tfds_mock):
    import tensorflow_datasets as tfds

    rows = {
        "train": [(i % 4, f"train title {i}", f"train description {i}") for i in range(40)],
        "test": [(i % 4, f"test title {i}", f"test description {i}") for i in range(8)],
    }
    bad_train = [(7, "label seven", "d"), (1, "", "")]

    def as_dataset(self, split, **kwargs):
        chosen = rows[str(split)] + (bad_train if str(split) == "train" else [])
        return tf.data.Dataset.from_tensor_slices({
            "label": tf.constant([label for label, _, _ in chosen], tf.int64),
            "title": tf.constant([title.encode() for _, title, _ in chosen]),
            "description": tf.constant([description.encode() for _, _, description in chosen])})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        examples = ingest.run({}, tmp_path / "out", IngestConfig(data="tfds", max_bad_row_fraction=0.1),
                              runtime)["examples"]
    assert read_split(examples.uri, "train") + read_split(examples.uri, "eval") == Counter(rows["train"])
    assert read_split(examples.uri, "test") == Counter(rows["test"])
    records = [json.loads(line) for line in layouts.quarantine_file(examples.uri).read_text().splitlines()]
    assert [(r["source"], r["line"], r["reason"]) for r in records] == [
        ("tfds:ag_news_subset/train", 41, "class_out_of_range"),
        ("tfds:ag_news_subset/train", 42, "empty_title_and_description")]
