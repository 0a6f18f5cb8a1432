"""Where each artifact's files live and how they are named: the one owner of every on-disk layout.

A component writes an artifact and later components read it; both sides go through this module, so a file or
folder name is spelled once and a writer cannot drift from its readers (in the spirit of TFX's
`tfx/utils/path_utils.py` and the key constants of `tfx/types/standard_component_specs.py`). Each artifact
type has its own section below: its folder layout in the comment, then the names and the functions that
write and read it. TensorFlow-free (JSON and globbing only), so the CLI and the benchmarks can import it
cheaply.
"""
from __future__ import annotations

import bisect
import glob
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from contract.artifacts import ComponentError
from contract.files import read_json, write_json_atomic

# ----------------------------------------------------------------------------------------------------------
# Splits and classes, shared by every artifact that holds examples or predictions

# what the source data provides; eval is carved out of train by ingest
SOURCE_SPLITS = ("train", "test")
SPLITS = ("train", "eval", "test")
# label i is CLASS_NAMES[i]
CLASS_NAMES = ("World", "Sports", "Business", "Sci/Tech")
NUM_CLASSES = len(CLASS_NAMES)

# ----------------------------------------------------------------------------------------------------------
# TFRecord files of tf.Examples (examples and transformed_examples): part-SSSSS-of-NNNNN.tfrecord.gz, gzipped

EXAMPLE_FILE_SUFFIX = ".tfrecord.gz"
EXAMPLE_FILE_PATTERN = "part-*" + EXAMPLE_FILE_SUFFIX


def shard_file_name(shard: int, num_shards: int) -> str:
    return f"part-{shard:05d}-of-{num_shards:05d}{EXAMPLE_FILE_SUFFIX}"


def example_file_pattern(folder: Path | str) -> str:
    """The glob pattern of the example files in one folder (a split, or a bucket of a split)."""
    return f"{str(folder).rstrip('/')}/{EXAMPLE_FILE_PATTERN}"


def example_files(folder: Path | str) -> list[str]:
    """The example files of one folder, sorted (an empty list if there are none)."""
    return sorted(glob.glob(example_file_pattern(folder)))


# ----------------------------------------------------------------------------------------------------------
# examples (ingest):  <split>/part-*.tfrecord.gz (tf.Example title, description, label), counts.json,
#                     quarantine.jsonl
# From a stream of spans (library/spans.py) the rows are kept per source, so that an unchanged span can be
# carried over to the next run as it is:
#   spans/<span>/{train,eval}/part-*.tfrecord.gz, counts.json, quarantine.jsonl   one folder per window span
#   fixed_test/test/part-*.tfrecord.gz, counts.json, quarantine.jsonl               the fixed test set
#   sources.json  {source: {sha256, reuse_key}}; counts.json and quarantine.jsonl over all of them
# A split's files are those of every source folder (examples_files).

COUNTS_FILE = "counts.json"
QUARANTINE_FILE = "quarantine.jsonl"
SPANS_DIR = "spans"
FIXED_TEST_DIR = "fixed_test"
SOURCES_FILE = "sources.json"


def split_dir(examples_uri: Path | str, split: str) -> Path:
    """A split's folder in `examples` or in `transformed_examples`."""
    return Path(examples_uri) / split


def span_dir(examples_uri: Path | str, span: str) -> Path:
    """The folder of one span's examples in an `examples` artifact of a stream."""
    return Path(examples_uri) / SPANS_DIR / span


def fixed_test_dir(examples_uri: Path | str) -> Path:
    return Path(examples_uri) / FIXED_TEST_DIR


def source_folder(examples_uri: Path | str, source: str | None) -> Path:
    """Where one source's rows go: the artifact itself (one folder), a span's folder, or the fixed test set's
    folder (source "" in a stream)."""
    if source is None:
        return Path(examples_uri)
    return span_dir(examples_uri, source) if source else fixed_test_dir(examples_uri)


def examples_files(examples_uri: Path | str, split: str) -> list[str]:
    """The raw example files of one split of an `examples` artifact (every span's in a stream), sorted."""
    uri = Path(examples_uri)
    folders = [uri, fixed_test_dir(uri), *sorted((uri / SPANS_DIR).glob("*"))]
    return sorted(file for folder in folders for file in example_files(split_dir(folder, split)))


def span_examples_files(examples_uri: Path | str, span: str, split: str) -> list[str]:
    return example_files(split_dir(span_dir(examples_uri, span), split))


def span_profile_file(examples_uri: Path | str, span: str, sha256: str) -> Path:
    """A span's drift profile (library/span_profiles.py), written by ingest beside the span's examples and
    named by the SHA-256 of the train.csv it was read from: a corrected span gets a new file."""
    return span_dir(examples_uri, span) / f"profile-{sha256}.json"


def write_sources(examples_uri: Path | str, sources: dict[str, Any]) -> None:
    write_json_atomic(Path(examples_uri) / SOURCES_FILE, sources)


def read_sources(examples_uri: Path | str) -> dict[str, Any]:
    """{source: {sha256, reuse_key}} of a stream's examples; {} for a single folder's (or none)."""
    path = Path(examples_uri) / SOURCES_FILE
    return read_json(path) if path.is_file() else {}


def quarantine_file(examples_uri: Path | str) -> Path:
    return Path(examples_uri) / QUARANTINE_FILE


def write_counts(examples_uri: Path | str, counts: dict[str, Any]) -> None:
    write_json_atomic(Path(examples_uri) / COUNTS_FILE, counts)


def read_counts(examples_uri: Path | str) -> dict[str, Any]:
    return _read_json_file(Path(examples_uri) / COUNTS_FILE, "examples", "ingest")


# ----------------------------------------------------------------------------------------------------------
# schema (validate): schema.pbtxt    statistics (validate): statistics.json, drift.json (a stream)
# anomalies: anomalies.json

SCHEMA_FILE = "schema.pbtxt"
STATISTICS_FILE = "statistics.json"
ANOMALIES_FILE = "anomalies.json"


def schema_file(schema_uri: Path | str) -> Path:
    return Path(schema_uri) / SCHEMA_FILE


def write_statistics(statistics_uri: Path | str, per_split: dict[str, Any]) -> None:
    write_json_atomic(Path(statistics_uri) / STATISTICS_FILE, {"splits": per_split})


# a stream's newest span against the rest of the window: {newest_span, checks}
DRIFT_FILE = "drift.json"


def write_drift(statistics_uri: Path | str, drift: dict[str, Any]) -> None:
    write_json_atomic(Path(statistics_uri) / DRIFT_FILE, drift)


def read_drift(statistics_uri: Path | str) -> dict[str, Any] | None:
    path = Path(statistics_uri) / DRIFT_FILE
    return read_json(path) if path.is_file() else None


def read_statistics(statistics_uri: Path | str) -> dict[str, Any]:
    """{split: statistics} as validate wrote them."""
    return _read_json_file(Path(statistics_uri) / STATISTICS_FILE, "statistics", "validate")["splits"]


def write_anomalies(anomalies_uri: Path | str, anomalies: list[dict[str, Any]]) -> None:
    write_json_atomic(Path(anomalies_uri) / ANOMALIES_FILE, anomalies)


def read_anomalies(anomalies_uri: Path | str) -> list[dict[str, Any]]:
    return _read_json_file(Path(anomalies_uri) / ANOMALIES_FILE, "anomalies", "validate")


# ----------------------------------------------------------------------------------------------------------
# transform_graph (transform): TFT's transform_fn/, transformed_metadata/, metadata/, and model_input.json
# (a copy of model_input.json also goes into the trainer's model artifact)

MODEL_INPUT_FILE = "model_input.json"
# tft.TFTransformOutput.TRANSFORM_FN_DIR
TRANSFORM_FN_DIR = "transform_fn"


@dataclass(frozen=True)
class ModelInputSpec:
    """What the transform tells model code about its output: how to size the model and what its input is."""
    # token ids are 0 (padding) .. embedding_input_dim - 1
    embedding_input_dim: int
    vocab_size: int
    num_oov_buckets: int
    # tokens kept per text
    max_length: int
    num_classes: int
    # which raw text the tokens come from: "title" or "title_description"
    text_features: str
    # inclusive upper length of each bucket_<upper> folder
    bucket_upper_bounds: tuple[int, ...]
    padding_id: int
    # the vocabulary's name inside transform_fn/assets
    vocab_filename: str


def vocabulary_file(transform_graph_uri: Path | str, spec: ModelInputSpec) -> Path:
    """The transform's vocabulary: one token per line, the most frequent first; line i is token id i + 1."""
    return Path(transform_graph_uri) / TRANSFORM_FN_DIR / "assets" / spec.vocab_filename


def write_model_input(folder: Path | str, spec: ModelInputSpec) -> None:
    values = asdict(spec)
    values["bucket_upper_bounds"] = list(spec.bucket_upper_bounds)
    write_json_atomic(Path(folder) / MODEL_INPUT_FILE, values)


def read_model_input(folder: Path | str) -> ModelInputSpec:
    """The ModelInputSpec of a transform_graph or a model artifact; a missing or malformed file is a
    ComponentError that names the file."""
    path = Path(folder) / MODEL_INPUT_FILE
    if not path.is_file():
        raise ComponentError(f"{path} is missing: the artifact was not written by the transform or trainer")
    values = read_json(path)
    names = [field.name for field in fields(ModelInputSpec)]
    missing = [name for name in names if name not in values]
    if missing:
        raise ComponentError(f"{path} lacks {', '.join(missing)}: it was written by another version of "
                             "the transform; rerun it (--rerun transform)")
    for name in ("embedding_input_dim", "num_classes", "max_length"):
        if not isinstance(values[name], int) or isinstance(values[name], bool) or values[name] < 1:
            raise ComponentError(f"{path}: {name} must be a positive integer, got {values[name]!r}")
    bounds = values["bucket_upper_bounds"]
    if not bounds or not all(isinstance(bound, int) for bound in bounds):
        raise ComponentError(
            f"{path}: bucket_upper_bounds must be a non-empty list of integers, got {bounds!r}"
        )
    return ModelInputSpec(**{name: values[name] for name in names if name != "bucket_upper_bounds"},
                          bucket_upper_bounds=tuple(bounds))


# ----------------------------------------------------------------------------------------------------------
# transformed_examples (transform): <split>/bucket_<upper>/part-*.tfrecord.gz, buckets.json
# bucket_<upper> holds the examples whose token count is in (previous bucket's upper, upper]; an empty bucket
# has no folder.

BUCKET_DIR_PREFIX = "bucket_"
_BUCKET_DIR = re.compile(rf"^{BUCKET_DIR_PREFIX}(\d+)$")
BUCKETS_FILE = "buckets.json"


def bucket_dir_name(upper_bound: int) -> str:
    return f"{BUCKET_DIR_PREFIX}{upper_bound}"


def parse_bucket_dir(name: str) -> int | None:
    """The upper bound of a bucket folder's name, or None if `name` is not a bucket folder."""
    match = _BUCKET_DIR.match(name)
    return int(match.group(1)) if match else None


def bucket_index(length: int, upper_bounds: Sequence[int]) -> int:
    """Index of the bucket holding `length`: the first bucket whose inclusive upper bound is >= length
    (longer texts were cut to the last bound)."""
    return min(bisect.bisect_left(upper_bounds, length), len(upper_bounds) - 1)


def bucket_of(length: int, upper_bounds: Sequence[int]) -> str:
    """The bucket folder name of an example with `length` tokens."""
    return bucket_dir_name(upper_bounds[bucket_index(length, upper_bounds)])


def bucket_files(transformed_examples_uri: Path | str, split: str) -> dict[int, list[str]]:
    """{bucket upper bound: sorted example files} of one split, in increasing bucket order."""
    folder = split_dir(transformed_examples_uri, split)
    if not folder.is_dir():
        raise ComponentError(f"transformed examples have no {split!r} split: {folder} is missing")
    buckets = {}
    for child in folder.iterdir():
        upper = parse_bucket_dir(child.name)
        if upper is not None and child.is_dir():
            buckets[upper] = example_files(child)
    if not buckets:
        raise ComponentError(f"{folder} holds no {BUCKET_DIR_PREFIX}<upper>/ folders of TFRecords")
    return dict(sorted(buckets.items()))


def write_buckets(transformed_examples_uri: Path | str, report: dict[str, Any]) -> None:
    write_json_atomic(Path(transformed_examples_uri) / BUCKETS_FILE, report)


def read_buckets(transformed_examples_uri: Path | str) -> dict[str, Any]:
    return _read_json_file(Path(transformed_examples_uri) / BUCKETS_FILE, "transformed_examples", "transform")


# ----------------------------------------------------------------------------------------------------------
# best_hyperparameters (tuner): best_hyperparameters.json {architecture, values, tuned, objective,
# best_score}, trials.csv, trials.md

HYPERPARAMETERS_FILE = "best_hyperparameters.json"
TRIALS_CSV_FILE = "trials.csv"
TRIALS_MARKDOWN_FILE = "trials.md"


def write_best_hyperparameters(folder: Path | str, result: dict[str, Any]) -> None:
    write_json_atomic(Path(folder) / HYPERPARAMETERS_FILE, result)


def read_best_hyperparameters(folder: Path | str) -> dict[str, Any]:
    """The tuner's result as written; what its values mean is for the model code to check."""
    return _read_json_file(Path(folder) / HYPERPARAMETERS_FILE, "best_hyperparameters", "tuner")


# ----------------------------------------------------------------------------------------------------------
# model (trainer): keras/model.keras, hyperparameters.json (the values trained), model_input.json,
# serving_model/ (the serving SavedModel)
# model_run (trainer): history.json, tensorboard/ (TensorBoard)

SERVING_MODEL_DIR = "serving_model"
# TF's name, as is the warm-up file's TF Serving replays at load time
SAVED_MODEL_FILE = "saved_model.pb"
# TF's too: hashes of saved_model.pb, rewritten whenever it is
FINGERPRINT_FILE = "fingerprint.pb"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
KERAS_MODEL_FILE = "keras/model.keras"
# TF's name for a SavedModel's asset files
SAVED_MODEL_ASSETS_DIR = "assets"
TRAINED_HYPERPARAMETERS_FILE = "hyperparameters.json"
HISTORY_FILE = "history.json"
# TensorBoard logs: the trainer's model_run and the tuner's step folder
TENSORBOARD_DIR = "tensorboard"


def serving_model_dir(model_uri: Path | str) -> Path:
    """Where the trainer writes the serving SavedModel inside its `model` artifact."""
    return Path(model_uri) / SERVING_MODEL_DIR


def has_saved_model(folder: Path | str) -> bool:
    return (Path(folder) / SAVED_MODEL_FILE).is_file()


def existing_serving_model_dir(model_uri: Path | str) -> Path:
    """The SavedModel folder of a model: a trainer model artifact's serving_model/, or `model_uri` itself if
    it is a SavedModel (a pushed version folder: the evaluator's baseline when the store knows no blessed
    model)."""
    path = serving_model_dir(model_uri)
    if not path.is_dir() and has_saved_model(model_uri):
        return Path(model_uri)
    if not has_saved_model(path):
        raise ComponentError(f"{path} holds no SavedModel: the model artifact has no exported serving model")
    return path


def keras_model_file(model_uri: Path | str) -> Path:
    return Path(model_uri) / KERAS_MODEL_FILE


def write_trained_hyperparameters(model_uri: Path | str, chosen: dict[str, Any]) -> None:
    write_json_atomic(trained_hyperparameters_file(model_uri), chosen)


def trained_hyperparameters_file(model_uri: Path | str) -> Path:
    return Path(model_uri) / TRAINED_HYPERPARAMETERS_FILE


MODEL_LINEAGE_FILE = "lineage.json"


def model_lineage_file(model_uri: Path | str) -> Path:
    """What a trained model learned from (library/warm_start.py): {"training_spans": [[span, sha256], ...] of
    its own window, "lineage_spans": the same over it and every model it was warm-started from,
    "warm_start_from": the base model's folder or null}."""
    return Path(model_uri) / MODEL_LINEAGE_FILE


def model_vocabulary_file(model_uri: Path | str, spec: ModelInputSpec) -> Path:
    """The vocabulary a trained model's token ids index: the asset its serving SavedModel carries (the export
    embeds the transform graph, vocabulary included; SavedModel keeps an asset's file name)."""
    return serving_model_dir(model_uri) / SAVED_MODEL_ASSETS_DIR / spec.vocab_filename


def tensorboard_dir(folder: Path | str) -> Path:
    """TensorBoard's --logdir inside a trainer's model_run artifact or the tuner's step folder."""
    return Path(folder) / TENSORBOARD_DIR


def write_history(model_run_uri: Path | str, history: dict[str, Any]) -> None:
    write_json_atomic(Path(model_run_uri) / HISTORY_FILE, history)


def read_history(model_run_uri: Path | str) -> dict[str, Any]:
    return _read_json_file(Path(model_run_uri) / HISTORY_FILE, "model_run", "trainer")


# ----------------------------------------------------------------------------------------------------------
# evaluation (evaluator): metrics.json, report.md, confusion_matrix.png, training_curves.png, tfma/
# blessing (evaluator): blessing.json {blessed, reason, accuracy, baseline_accuracy, thresholds}

METRICS_FILE = "metrics.json"
EVALUATION_REPORT_FILE = "report.md"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
TRAINING_CURVES_FILE = "training_curves.png"
EVALUATION_FIGURES = (CONFUSION_MATRIX_FILE, TRAINING_CURVES_FILE)
TFMA_DIR = "tfma"
BLESSING_FILE = "blessing.json"


def write_metrics(evaluation_uri: Path | str, metrics: dict[str, Any]) -> None:
    write_json_atomic(Path(evaluation_uri) / METRICS_FILE, metrics)


def read_metrics(evaluation_uri: Path | str) -> dict[str, Any]:
    return _read_json_file(Path(evaluation_uri) / METRICS_FILE, "evaluation", "evaluator")


def write_blessing(blessing_uri: Path | str, *, blessed: bool, reason: str, accuracy: float | None,
                   baseline_accuracy: float | None, thresholds: dict[str, float]) -> None:
    write_json_atomic(Path(blessing_uri) / BLESSING_FILE, {
        "blessed": blessed, "reason": reason, "accuracy": accuracy, "baseline_accuracy": baseline_accuracy,
        "thresholds": thresholds})


def read_blessing(blessing_uri: Path | str) -> dict[str, Any]:
    return _read_json_file(Path(blessing_uri) / BLESSING_FILE, "blessing", "evaluator")


# ----------------------------------------------------------------------------------------------------------
# pushed_model (pusher): push.json {pushed, version, path, reason, adopted}
# (the serving folder's layout is in library/folder_layouts.py)

PUSH_FILE = "push.json"


def write_push(pushed_model_uri: Path | str, record: dict[str, Any]) -> None:
    write_json_atomic(Path(pushed_model_uri) / PUSH_FILE, record)


def read_push(pushed_model_uri: Path | str) -> dict[str, Any]:
    return _read_json_file(Path(pushed_model_uri) / PUSH_FILE, "pushed_model", "pusher")


# ----------------------------------------------------------------------------------------------------------


def _read_json_file(path: Path, artifact: str, writer: str) -> Any:
    if not path.is_file():
        raise ComponentError(f"{path} is missing: the {artifact} artifact was not written by the {writer} "
                             "component")
    return read_json(path)
