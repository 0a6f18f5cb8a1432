"""The validate component on real Beam: statistics of the ingested sample, and anomalies in hand-written
tf.Example files (label outside the domain, missing feature, wrong type, wrong valency, unexpected feature,
empty splits)."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import tensorflow as tf

from components.validate import executor as validate
from components.validate import spec as validate_spec
from contract.artifacts import LOST_ROWS_ADVICE, Artifact, ComponentError
from contract.data_config import ValidateConfig
from library import layouts


def bytes_feature(*values: str) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))


def int_feature(*values: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def good_features(row: int) -> dict[str, tf.train.Feature]:
    return {
        "title": bytes_feature(f"title {row}"),
        "description": bytes_feature(f"a description of row {row}"),
        "label": int_feature(row % 4),
    }


def write_split(examples_dir: Path, split: str, rows: list[dict[str, tf.train.Feature]]) -> None:
    folder = layouts.split_dir(examples_dir, split)
    folder.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(folder / layouts.shard_file_name(0, 1)), options="GZIP") as writer:
        for features in rows:
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def read_split(examples_dir: Path, split: str) -> list[tuple[int, str, str]]:
    files = layouts.examples_files(examples_dir, split)
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        rows.append((feature["label"].int64_list.value[0], feature["title"].bytes_list.value[0].decode(),
                     feature["description"].bytes_list.value[0].decode()))
    return rows


def test_statistics_of_the_sample_are_right(ingested_sample, schema_artifact):
    output_dir = Path(schema_artifact.uri).parent
    statistics = layouts.read_statistics(output_dir / "statistics")
    assert layouts.read_anomalies(output_dir / "anomalies") == []
    assert (
        layouts.schema_file(schema_artifact.uri).read_bytes() == ValidateConfig().schema_path().read_bytes()
    )

    assert statistics["train"]["rows"] + statistics["eval"]["rows"] == 1200
    assert statistics["test"]["rows"] == 400
    assert statistics["test"]["label_counts"] == {"0": 100, "1": 100, "2": 100, "3": 100}
    for split in ("train", "eval", "test"):
        rows = read_split(Path(ingested_sample.uri), split)
        stats = statistics[split]
        assert stats["rows"] == len(rows)
        assert stats["label_counts"] == {str(k): v for k, v in sorted(Counter(r[0] for r in rows).items())}
        assert stats["empty_title"] == sum(1 for _, title, _ in rows if not title.strip())
        assert stats["empty_description"] == sum(1 for _, _, description in rows if not description.strip())
        lengths = {"title": sorted(len(t.split()) for _, t, _ in rows),
                   "description": sorted(len(d.split()) for _, _, d in rows),
                   "title_description": sorted(len(t.split()) + len(d.split()) for _, t, d in rows)}
        for field, values in lengths.items():
            reported = stats["token_lengths"][field]
            assert reported["min"] == values[0] and reported["max"] == values[-1], (split, field)
            assert reported["mean"] == pytest.approx(sum(values) / len(values)), (split, field)
            for name, quantile in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
                # Approximate quantiles: allow one percent of rank error either side.
                low, high = values[max(0, int((quantile - 0.01) * len(values)) - 1)], values[
                    min(len(values) - 1, int((quantile + 0.01) * len(values)))]
                assert low <= reported[name] <= high, (split, field, name, reported[name], low, high)


def test_anomalies_are_listed_and_fail_the_component(tmp_path, runtime):
    examples_dir = tmp_path / "examples"
    missing_description = good_features(101)
    del missing_description["description"]
    write_split(examples_dir, "train", [
        *(good_features(i) for i in range(6)),
        {**good_features(100), "label": int_feature(7)},
        missing_description,
        {**good_features(102), "title": int_feature(5)},
        {**good_features(103), "label": int_feature(1, 2)},
        {**good_features(104), "source": bytes_feature("somewhere")},
    ])
    write_split(examples_dir, "eval", [])  # a file with no examples
    write_split(examples_dir, "test", [good_features(i) for i in range(3)] + [
        {**good_features(200), "label": int_feature(-1)}])
    output_dir = tmp_path / "out"

    with pytest.raises(ComponentError) as failure:
        validate.run({"examples": Artifact("examples", examples_dir)}, output_dir, ValidateConfig(), runtime)

    anomalies = layouts.read_anomalies(output_dir / "anomalies")
    found = sorted((a["split"], a["feature"] or "", a["kind"], a["count"]) for a in anomalies)
    assert found == sorted([
        ("train", "label", "out_of_domain", 1),
        ("train", "description", "missing_feature", 1),
        ("train", "title", "wrong_type", 1),
        ("train", "label", "wrong_valency", 1),
        ("train", "source", "unexpected_feature", 1),
        ("eval", "", "empty_split", 0),
        ("test", "label", "out_of_domain", 1),
    ])
    message = str(failure.value)
    assert "7 anomalies" in message
    assert "train: feature 'label' has 1 values outside the schema's domain [0, 3] (e.g. 7)" in message
    assert "test: feature 'label' has 1 values outside the schema's domain [0, 3] (e.g. -1)" in message
    assert "train: feature 'description' is missing in 1 of 11 examples" in message
    assert "train: feature 'title' should hold bytes_list values but 1 examples hold int64_list" in message
    assert "eval: the split is empty" in message
    statistics = layouts.read_statistics(output_dir / "statistics")
    assert statistics["train"]["rows"] == 11 and statistics["eval"]["rows"] == 0
    assert statistics["test"]["label_counts"] == {"-1": 1, "0": 1, "1": 1, "2": 1, "3": 0}


def test_a_split_without_files_is_an_empty_split(tmp_path, runtime):
    examples_dir = tmp_path / "examples"
    write_split(examples_dir, "train", [good_features(i) for i in range(4)])
    write_split(examples_dir, "eval", [good_features(i) for i in range(2)])
    with pytest.raises(ComponentError, match=r"test: the split is empty \(no files match .*test"):
        validate.run(
            {"examples": Artifact("examples", examples_dir)}, tmp_path / "out", ValidateConfig(), runtime
        )


def test_schema_file_errors_and_fingerprint(tmp_path, runtime):
    missing = ValidateConfig(schema=str(tmp_path / "missing.pbtxt"))
    with pytest.raises(ComponentError, match="schema file not found"):
        validate_spec.external_fingerprint(missing)
    with pytest.raises(ComponentError, match="schema file not found"):
        validate.run({"examples": Artifact("examples", tmp_path)}, tmp_path / "out", missing, runtime)

    schema = tmp_path / "schema.pbtxt"
    schema.write_bytes(ValidateConfig().schema_path().read_bytes())
    config = ValidateConfig(schema=str(schema))
    first = validate_spec.external_fingerprint(config)
    assert first == validate_spec.external_fingerprint(ValidateConfig())
    schema.write_text(schema.read_text().replace("max: 3", "max: 4"))
    assert validate_spec.external_fingerprint(config) != first
    schema.write_text("feature { name: ")
    with pytest.raises(ComponentError, match="not a valid tensorflow_metadata Schema"):
        validate.run({"examples": Artifact("examples", tmp_path)}, tmp_path / "out2", config, runtime)


def test_a_runner_that_returns_other_row_counts_than_ingest_wrote_fails_the_step_with_one_line(
        ingested_sample, tmp_path, runtime):
    # The examples artifact says one train row more than its files hold: what a runner losing a row looks
    # like.
    claimed = dict(ingested_sample.properties, train_rows=ingested_sample.properties["train_rows"] + 1)
    examples = dataclasses.replace(ingested_sample, properties=claimed)
    with pytest.raises(ComponentError) as raised:
        validate.run({"examples": examples}, tmp_path / "out", ValidateConfig(), runtime)
    rows = ingested_sample.properties["train_rows"]
    assert str(raised.value) == (
        f"validate: the Beam runner returned {rows:,} train rows of the {rows + 1:,} in the "
        f"examples artifact {ingested_sample.uri}; {LOST_ROWS_ADVICE}"
    )
