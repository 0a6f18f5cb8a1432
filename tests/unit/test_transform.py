"""Tests of the transform component: the text ops on their own, then one real tf.Transform run on Beam over
the committed sample (written as ingest-style TFRecords by this file's own fixture)."""
from __future__ import annotations

import collections
import csv
import dataclasses
import json
from pathlib import Path

import pytest
import tensorflow as tf

from components.transform import executor as transform
from contract.artifacts import LOST_ROWS_ADVICE, Artifact, ComponentError, Runtime
from contract.data_config import TransformConfig, ValidateConfig
from library import layouts, text
from library.layouts import SPLITS

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "support" / "data" / "ag_news_sample"
PROJECT_SCHEMA = ValidateConfig().schema_path()  # the packaged schema, read unconditionally
# Small enough to be quick; max_length 64 truncates 66 of the sample's 1,600 texts, and no text is shorter
# than 9 tokens, so bucket_8 stays empty. The vocabulary limit is above the ~8,000 distinct train tokens, so
# the vocabulary must be exactly the train split's tokens.
CONFIG = TransformConfig(
    vocab_size=20_000, num_oov_buckets=1, max_length=64, bucket_boundaries=(8, 16, 24, 32, 48)
)
QUIET = Runtime(beam_args=(), seed=42, log=lambda message: None)


# ----------------------------------------------------------------------------------------------------------
# Text ops


def _normalized(value: str) -> str:
    return text.normalize_text(tf.constant([value]))[0].numpy().decode("utf-8")


def _tokens(value: str, text_features: str = "title", max_length: int = 1000) -> list[str]:
    ragged = text.text_to_tokens({"title": tf.constant([value]), "description": tf.constant(["ignored"])},
                                 text_features, max_length)
    return [token.decode("utf-8") for token in ragged[0].numpy()]


@pytest.mark.parametrize("raw, expected", [
    ("Bush #39;s plan", "bush 's plan"),
    ("Bush &#39;s plan", "bush 's plan"),
    ("&lt;b&gt;Oil&lt;/b&gt; prices", " oil  prices"),
    ('said &lt;A HREF=""http://x.com/q?ticker=MON.N""&gt;MON.N&lt;/A&gt; on', "said  mon.n  on"),
    ("Wall Street's dwindling\\band of ultra-cynics", "wall street's dwindling band of ultra-cynics"),
    ("MiXeD CaSe ÜBER", "mixed case über"),
    ("up to  #36;500", "up to  $500"),
    ("AT amp;T and Johnson &amp; Johnson", "at &t and johnson & johnson"),
    ("TV  quot;Anthem quot; gt; rising", 'tv  "anthem " > rising'),
    ("Fed #151; again #8482; now nbsp;here &eacute;", "fed  -  again   now  here  "),
])
def test_normalize_text_removes_ag_news_artifacts(raw, expected):
    assert _normalized(raw) == expected


def test_tokens_are_words_of_letters_and_digits():
    assert _tokens("Wall St. Bears #39;s \\band &lt;b&gt;Q3&lt;/b&gt; 2.5% U.S. café") == [
        "wall", "st", "bears", "s", "band", "q3", "2", "5", "u", "s", "café"]
    assert _tokens(" quot; &lt;p&gt; --- ") == []  # nothing but artifacts and punctuation: no tokens


def test_text_features_select_title_or_title_and_description():
    features = {"title": tf.constant(["Oil Up"]), "description": tf.constant(["Prices rise"])}
    assert text.join_text_features(features, "title").numpy().tolist() == [b"Oil Up"]
    assert text.join_text_features(features, "title_description").numpy().tolist() == [b"Oil Up Prices rise"]
    with pytest.raises(ValueError):
        text.join_text_features(features, "description")


def test_text_to_tokens_truncates_to_max_length():
    assert _tokens("a b c d e", max_length=3) == ["a", "b", "c"]
    assert _tokens("a b", max_length=3) == ["a", "b"]


# ----------------------------------------------------------------------------------------------------------
# Buckets, padding and schema (no Beam)


def test_bucket_index_uses_inclusive_upper_bounds():
    uppers = [8, 16, 64]
    assert [layouts.bucket_index(n, uppers) for n in (0, 8, 9, 16, 17, 64)] == [0, 0, 1, 1, 2, 2]
    assert [layouts.bucket_of(n, uppers) for n in (8, 9, 100)] == ["bucket_8", "bucket_16", "bucket_64"]


def test_padding_report_counts_per_batch_longest_padding():
    # Order keys put the lengths in the order 2, 9, 3, 10, 1; bucket uppers 4 and 16; batch size 2.
    keyed = [("c", 3), ("a", 2), ("e", 1), ("b", 9), ("d", 10)]
    report = transform.padding_report(keyed, [4, 16], batch_size=2)
    assert report["examples"] == 5 and report["real_tokens"] == 25
    # bucket_4 gets 2, 3, 1: batches [2, 3] -> 1 pad, [1] -> 0. bucket_16 gets 9, 10: 1 pad.
    assert report["buckets"]["bucket_4"] == {"upper_bound": 4, "examples": 3, "real_tokens": 6,
                                             "padded_tokens": 1, "padding_ratio": round(1 / 6, 6)}
    assert report["buckets"]["bucket_16"]["padded_tokens"] == 1
    assert report["bucketed"]["padded_tokens"] == 2
    # Unbucketed batches [2, 9] -> 7, [3, 10] -> 7, [1] -> 0.
    assert report["unbucketed"] == {"padded_tokens": 14, "padding_ratio": round(14 / 25, 6)}
    assert transform.padding_report([], [4])["buckets"] == {}


def _write_schema(folder: Path, schema_text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    layouts.schema_file(folder).write_text(schema_text, encoding="utf-8")
    return folder


def _raw_schema_text() -> str:
    return PROJECT_SCHEMA.read_text(encoding="utf-8")  # the project's own contract, never a stand-in


def test_load_raw_schema_makes_single_value_features_scalar(tmp_path):
    from tensorflow_transform.tf_metadata import schema_utils
    schema = transform.load_raw_schema(_write_schema(tmp_path, _raw_schema_text()))
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    assert spec == {"title": tf.io.FixedLenFeature([], tf.string),
                    "description": tf.io.FixedLenFeature([], tf.string),
                    "label": tf.io.FixedLenFeature([], tf.int64)}
    label = next(feature for feature in schema.feature if feature.name == "label")
    assert (label.int_domain.min, label.int_domain.max) == (0, 3)


@pytest.mark.parametrize(
    "schema_text, message",
    [
        (
            'feature { name: "title" type: BYTES } feature { name: "description" type: BYTES }',
            "no feature 'label'",
        ),
        (
            'feature { name: "title" type: BYTES } feature { name: "description" type: INT } '
            'feature { name: "label" type: INT }',
            "'description' must be of type BYTES",
        ),
        (
            'feature { name: "title" type: BYTES value_count { min: 1 max: 3 } } '
            'feature { name: "description" type: BYTES } feature { name: "label" type: INT }',
            "exactly one value",
        ),
        ("feature { nonsense", "not a valid Schema"),
    ],
)
def test_load_raw_schema_rejects_schemas_the_transform_cannot_use(tmp_path, schema_text, message):
    with pytest.raises(ComponentError, match=message):
        transform.load_raw_schema(_write_schema(tmp_path, schema_text))


def test_run_fails_clearly_without_split_files(tmp_path):
    examples = tmp_path / "examples"
    (examples / "train").mkdir(parents=True)
    inputs = {"examples": Artifact("examples", examples),
              "schema": Artifact("schema", _write_schema(tmp_path / "schema", _raw_schema_text()))}
    with pytest.raises(ComponentError, match="no files matching"):
        transform.run(inputs, tmp_path / "out", CONFIG, QUIET)


# ----------------------------------------------------------------------------------------------------------
# A real run on the sample


def _sample_rows() -> dict[str, list[tuple[str, str, int]]]:
    """(title, description, label) per split: every tenth train row is eval, test.csv is test."""
    def read(name):
        with open(SAMPLE_DIR / name, newline="", encoding="utf-8") as handle:
            return [(title, description, int(label) - 1) for label, title, description in csv.reader(handle)]
    train = read("train.csv")
    return {"train": [row for i, row in enumerate(train) if i % 10],
            "eval": [row for i, row in enumerate(train) if i % 10 == 0],
            "test": read("test.csv")}


def _write_examples(folder: Path, rows: dict[str, list[tuple[str, str, int]]]) -> None:
    for split, split_rows in rows.items():
        layouts.split_dir(folder, split).mkdir(parents=True)
        path = layouts.split_dir(folder, split) / layouts.shard_file_name(0, 1)
        with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
            for title, description, label in split_rows:
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "title": tf.train.Feature(bytes_list=tf.train.BytesList(value=[title.encode("utf-8")])),
                    "description": tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[description.encode("utf-8")])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                })).SerializeToString())


@pytest.fixture(scope="module")
def sample_rows():
    return _sample_rows()


@pytest.fixture(scope="module")
def transformed(tmp_path_factory, sample_rows):
    root = tmp_path_factory.mktemp("transform_test")
    _write_examples(root / "examples", sample_rows)
    inputs = {"examples": Artifact("examples", root / "examples"),
              "schema": Artifact("schema", _write_schema(root / "schema", _raw_schema_text()))}
    return transform.run(inputs, root / "out", CONFIG, QUIET)


def _expected_tokens(rows: list[tuple[str, str, int]]) -> list[list[str]]:
    ragged = text.text_to_tokens({"title": tf.constant([r[0] for r in rows]),
                                  "description": tf.constant([r[1] for r in rows])},
                                 CONFIG.text_features, CONFIG.max_length)
    return [[token.decode("utf-8") for token in row] for row in ragged.numpy()]


def _read_bucket(folder: Path) -> list[tuple[tuple[int, ...], int, int]]:
    """(token_ids, length, label) of every example in a bucket folder."""
    files = layouts.example_files(folder)
    assert files, f"no TFRecord files in {folder}"
    examples = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        examples.append((tuple(feature["token_ids"].int64_list.value),
                         feature["length"].int64_list.value[0], feature["label"].int64_list.value[0]))
    return examples


def _read_split(examples_dir: Path, split: str) -> dict[str, list[tuple[tuple[int, ...], int, int]]]:
    return {folder.name: _read_bucket(folder) for folder in sorted((examples_dir / split).iterdir())}


def _vocabulary(graph_dir: Path) -> list[str]:
    path = graph_dir / "transform_fn" / "assets" / transform.VOCAB_FILENAME
    return path.read_text(encoding="utf-8").splitlines()


def test_outputs_are_loadable_and_describe_the_model_input(transformed):
    import tensorflow_transform as tft
    graph_dir = transformed["transform_graph"].uri
    output = tft.TFTransformOutput(str(graph_dir))
    assert output.transformed_feature_spec() == {
        "token_ids": tf.io.VarLenFeature(tf.int64), "length": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64)}
    assert set(output.raw_feature_spec()) == {"title", "description", "label"}
    vocab_size = len(_vocabulary(graph_dir))
    model_input = layouts.read_model_input(graph_dir)
    assert model_input.vocab_size == vocab_size == output.vocabulary_size_by_name(transform.VOCAB_FILENAME)
    assert model_input.embedding_input_dim == vocab_size + CONFIG.num_oov_buckets + 1
    assert model_input.bucket_upper_bounds == (8, 16, 24, 32, 48, 64)
    assert (model_input.max_length, model_input.num_classes, model_input.text_features) == (
        64, 4, "title_description")
    assert (model_input.padding_id, model_input.vocab_filename) == (0, transform.VOCAB_FILENAME)
    assert transformed["transform_graph"].properties == {
        "vocab_size": vocab_size, "embedding_input_dim": vocab_size + 2}
    # Nothing but the two outputs is left in the component's folder.
    assert sorted(p.name for p in graph_dir.parent.iterdir()) == ["transform_graph", "transformed_examples"]


def test_vocabulary_is_built_from_the_train_split_only(transformed, sample_rows):
    vocabulary = _vocabulary(transformed["transform_graph"].uri)
    train_tokens = collections.Counter(t for row in _expected_tokens(sample_rows["train"]) for t in row)
    assert len(train_tokens) < CONFIG.vocab_size  # so every train token fits into the vocabulary
    assert set(vocabulary) == set(train_tokens)
    counts = [train_tokens[token] for token in vocabulary]
    assert counts == sorted(counts, reverse=True)  # most frequent first
    held_out_tokens = {
        t for split in ("eval", "test") for row in _expected_tokens(sample_rows[split]) for t in row
    }
    assert held_out_tokens - set(train_tokens), "the sample should have eval/test words unseen in train"


def test_examples_hold_shifted_ids_truncated_tokens_and_labels(transformed, sample_rows):
    """Every split's written examples equal an independent computation: text ops -> vocabulary file lookup
    + 1, out-of-vocabulary words -> the one OOV id, truncated to max_length, label passed through."""
    vocabulary = _vocabulary(transformed["transform_graph"].uri)
    id_of = {token: index + 1 for index, token in enumerate(vocabulary)}
    oov_id = len(vocabulary) + 1
    examples_dir = transformed["transformed_examples"].uri
    truncated = 0
    for split in SPLITS:
        expected = collections.Counter()
        for tokens, (_, _, label) in zip(_expected_tokens(sample_rows[split]), sample_rows[split]):
            expected[(tuple(id_of.get(t, oov_id) for t in tokens), len(tokens), label)] += 1
            truncated += len(tokens) == CONFIG.max_length
        written = [e for bucket in _read_split(examples_dir, split).values() for e in bucket]
        assert collections.Counter(written) == expected, split
        ids = [i for token_ids, _, _ in written for i in token_ids]
        assert min(ids) >= 1 and max(ids) <= oov_id  # 0 is padding only
        assert max(length for _, length, _ in written) <= CONFIG.max_length
        if split != "train":
            assert oov_id in ids  # words unseen in train
    assert truncated > 0


def test_examples_are_in_the_bucket_of_their_length(transformed, sample_rows):
    examples_dir = transformed["transformed_examples"].uri
    uppers = CONFIG.bucket_upper_bounds()
    report = layouts.read_buckets(examples_dir)
    for split in SPLITS:
        buckets = _read_split(examples_dir, split)
        assert layouts.bucket_dir_name(8) not in buckets  # no text has <= 8 tokens: an empty bucket is absent
        for name, examples in buckets.items():
            upper = layouts.parse_bucket_dir(name)
            lower = ([0] + uppers)[uppers.index(upper)]
            assert all(lower < length <= upper or (length == 0 and upper == uppers[0])
                       for _, length, _ in examples), name
            assert all(len(token_ids) == length for token_ids, length, _ in examples)
            assert report["splits"][split]["buckets"][name]["examples"] == len(examples)
            assert report["splits"][split]["buckets"][name]["real_tokens"] == sum(e[1] for e in examples)
        assert sum(len(examples) for examples in buckets.values()) == len(sample_rows[split])
        assert report["splits"][split]["examples"] == len(sample_rows[split])
    properties = transformed["transformed_examples"].properties
    assert properties["rows"] == {split: len(sample_rows[split]) for split in SPLITS}
    assert properties["train_bucket_examples"] == {
        name: bucket["examples"] for name, bucket in report["splits"]["train"]["buckets"].items()}


def test_bucketing_pads_less_than_batching_the_unbucketed_stream(transformed):
    report = layouts.read_buckets(transformed["transformed_examples"].uri)
    assert report["batch_size"] == 64
    for split in SPLITS:
        padding = report["splits"][split]
        assert 0 <= padding["bucketed"]["padding_ratio"] < padding["unbucketed"]["padding_ratio"], split
        assert padding["bucketed"]["padded_tokens"] == sum(
            b["padded_tokens"] for b in padding["buckets"].values()
        )
    properties = transformed["transformed_examples"].properties
    assert properties["padding_ratio_bucketed"]["train"] < properties["padding_ratio_unbucketed"]["train"]


def test_serving_graph_on_raw_strings_gives_the_written_ids(transformed, sample_rows):
    """No training/serving skew: the transform graph applied as the exporter does (transform_features_layer
    inside a tf.function, title and description only, no label) reproduces the written test examples."""
    import tensorflow_transform as tft
    layer = tft.TFTransformOutput(str(transformed["transform_graph"].uri)).transform_features_layer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def serve(title, description):
        outputs = layer({"title": title, "description": description})
        return tf.sparse.to_dense(outputs["token_ids"]), outputs["length"]

    rows = sample_rows["test"]
    token_ids, lengths = serve(tf.constant([r[0] for r in rows]), tf.constant([r[1] for r in rows]))
    served = collections.Counter(
        (tuple(ids[:length]), length, label) for ids, length, (_, _, label)
        in zip(token_ids.numpy().tolist(), lengths.numpy().tolist(), rows))
    assert all(not any(ids[length:]) for ids, length in
               zip(token_ids.numpy().tolist(), lengths.numpy().tolist()))  # only padding beyond the length
    written = [
        e for bucket in _read_split(transformed["transformed_examples"].uri, "test").values() for e in bucket
    ]
    assert served == collections.Counter(written)


def test_raw_metadata_matches_the_input_schema(transformed):
    import tensorflow_transform as tft
    raw_schema = tft.TFTransformOutput(str(transformed["transform_graph"].uri)).raw_metadata.schema
    features = {feature.name: feature for feature in raw_schema.feature}
    assert [features[name].type for name in ("title", "description", "label")] == [
        transform.RAW_FEATURE_TYPES[name] for name in ("title", "description", "label")]
    assert (features["label"].int_domain.min, features["label"].int_domain.max) == (0, 3)
    assert all(features[name].presence.min_fraction == 1.0 for name in features)


def test_padding_report_is_reproducible_from_the_written_examples(transformed):
    """buckets.json follows from the written lengths alone, in its stated order (hash of ids and label), so it
    does not depend on how Beam happened to order or serialize the examples."""
    import hashlib
    examples_dir = transformed["transformed_examples"].uri
    report = layouts.read_buckets(examples_dir)
    for split in SPLITS:
        keyed = [(hashlib.sha256(json.dumps([list(ids), label]).encode()).hexdigest(), length)
                 for bucket in _read_split(examples_dir, split).values() for ids, length, label in bucket]
        assert transform.padding_report(keyed, CONFIG.bucket_upper_bounds(), 64) == report["splits"][split]


def test_a_runner_that_returns_other_row_counts_than_ingest_wrote_fails_the_step_with_one_line(
        ingested_sample, schema_artifact, tmp_path, runtime):
    claimed = dict(ingested_sample.properties, eval_rows=ingested_sample.properties["eval_rows"] - 1)
    examples = dataclasses.replace(ingested_sample, properties=claimed)
    with pytest.raises(ComponentError) as raised:
        transform.run({"examples": examples, "schema": schema_artifact}, tmp_path / "out", CONFIG, runtime)
    rows = ingested_sample.properties["eval_rows"]
    assert str(raised.value) == (
        f"transform: the Beam runner returned {rows:,} eval rows of the {rows - 1:,} in "
        f"the examples artifact {ingested_sample.uri}; {LOST_ROWS_ADVICE}"
    )
