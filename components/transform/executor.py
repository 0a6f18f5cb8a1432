"""Transform: raw AG News examples -> token ids, with tf.Transform on Beam, written in length buckets.

The vocabulary is analyzed on the train split only; the resulting transform graph is applied unchanged to
train, eval and test, and later inside the serving model (see library/text.py). Token id 0 is reserved
for padding: vocabulary ids are 1..vocab_size, out-of-vocabulary buckets follow.

Outputs:
  transform_graph/       loadable with tft.TFTransformOutput: transform_fn/ (vocabulary in
                         transform_fn/assets/vocab_tokens), transformed_metadata/, metadata/ (raw schema),
                         model_input.json (library.layouts.ModelInputSpec: what the trainer needs to size the
                         model)
  transformed_examples/  <split>/bucket_<upper>/part-SSSSS-of-NNNNN.tfrecord.gz, tf.Examples with token_ids
                         (VarLen int64), length (int64), label (int64), bucket_<upper> holding lengths from
                         the previous bucket's upper + 1 to upper inclusive (empty buckets are absent);
                         buckets.json: per split and bucket, examples, tokens and padding at batch size 64.

Both outputs are byte-reproducible: the same examples and config give the same files, whichever runner,
process or folder ran the transform (library/tfrecord_io.py, library/reproducible_saved_model.py). File and
folder names come from library/layouts.py.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

# for annotations; run() imports tf.Transform when it runs
if TYPE_CHECKING:
    import tensorflow_transform as tft

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from contract.artifacts import Artifact, ComponentError, Runtime, check_rows_arrived
from contract.data_config import TransformConfig
from contract.names import EXAMPLES, SCHEMA, TOKEN_IDS, TRANSFORM_GRAPH, TRANSFORMED_EXAMPLES
from library.beam_options import pipeline_options
from library.layouts import (
    NUM_CLASSES,
    SPLITS,
    ModelInputSpec,
    bucket_dir_name,
    bucket_index,
    bucket_of,
    example_file_pattern,
    examples_files,
    schema_file,
    split_dir,
    write_buckets,
    write_model_input,
)
from library.reproducible_saved_model import make_saved_model_reproducible

# Raw features the transform reads, and their schema types. Any other feature in the schema is carried
# through the raw metadata but not used.
RAW_FEATURE_TYPES = {"title": schema_pb2.BYTES, "description": schema_pb2.BYTES, "label": schema_pb2.INT}
LABEL_KEY = "label"

LENGTH_KEY = "length"
PADDING_ID = 0
VOCAB_FILENAME = "vocab_tokens"

PADDING_BATCH_SIZE = 64
PADDING_ORDER = (
    "each split's examples ordered by the SHA-256 of their token ids and label (a fixed pseudo-random "
    "shuffle); bucketed: every bucket's examples in that order cut into batches, each padded to its longest "
    "sequence; unbucketed: the whole split in that order cut into batches, each padded to its longest "
    "sequence; "
    "a last partial batch counts as a batch"
)


# ----------------------------------------------------------------------------------------------------------
# The transform and its raw schema


def make_preprocessing_fn(config: TransformConfig) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The tf.Transform preprocessing_fn: raw title/description/label -> token_ids, length, label."""

    def preprocessing_fn(inputs: dict[str, Any]) -> dict[str, Any]:
        import tensorflow_transform as tft

        from library import text
        tokens = text.text_to_tokens(inputs, config.text_features, config.max_length)
        vocabulary_ids = tft.compute_and_apply_vocabulary(
            tokens,
            top_k=config.vocab_size,
            num_oov_buckets=config.num_oov_buckets,
            vocab_filename=VOCAB_FILENAME,
        )
        # Shift every id by one so that PADDING_ID (0) never stands for a real token (mask_zero downstream).
        token_ids = vocabulary_ids + 1
        return {
            # a sparse [batch, None] output is a VarLen feature
            TOKEN_IDS: token_ids.to_sparse(),
            LENGTH_KEY: tokens.row_lengths(),
            # Passed through untouched. The serving graph is applied without labels: TFT then feeds a
            # default for the missing input, and the caller ignores this output.
            LABEL_KEY: inputs[LABEL_KEY],
        }

    return preprocessing_fn


def load_raw_schema(schema_uri: Path) -> schema_pb2.Schema:
    """The raw data schema from the schema artifact, with title, description and label as scalar features.

    tf.Transform turns a feature with a fixed shape into a dense tensor and one without into a sparse one.
    Each of the three features holds exactly one value per example, so whatever single-value form the
    schema states (shape [], shape [1], or value_count 1..1) is rewritten as shape [] (a [batch] tensor),
    which is what the serving signature feeds. Types, presence and domains are kept as they are.
    """
    path = schema_file(schema_uri)
    if not path.is_file():
        raise ComponentError(f"raw schema not found: {path}")
    try:
        schema = text_format.Parse(path.read_text(encoding="utf-8"), schema_pb2.Schema())
    except text_format.ParseError as error:
        raise ComponentError(f"{path} is not a valid Schema text proto: {error}") from None
    features = {feature.name: feature for feature in schema.feature}
    for name, expected_type in RAW_FEATURE_TYPES.items():
        feature = features.get(name)
        if feature is None:
            raise ComponentError(
                f"{path} has no feature {name!r}; the transform needs {sorted(RAW_FEATURE_TYPES)}"
            )
        if feature.type != expected_type:
            raise ComponentError(f"{path}: feature {name!r} must be of type "
                                 f"{schema_pb2.FeatureType.Name(expected_type)}, "
                                 f"got {schema_pb2.FeatureType.Name(feature.type)}")
        dims = [dim.size for dim in feature.shape.dim]
        single_value = (
            (dims in ([], [1]))
            if feature.HasField("shape")
            else (
                not feature.HasField("value_count")
                or (feature.value_count.min, feature.value_count.max) == (1, 1)
            )
        )
        if not single_value:
            raise ComponentError(f"{path}: feature {name!r} must hold exactly one value per example")
        feature.ClearField("value_count")
        feature.ClearField("shape")
        # an empty shape: a scalar per example
        feature.shape.SetInParent()
    return schema


# ----------------------------------------------------------------------------------------------------------
# Length buckets and padding


def _padding_tokens(lengths: Sequence[int], batch_size: int) -> int:
    """Pad positions added when `lengths`, in this order, are cut into batches each padded to its longest."""
    padding = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start:start + batch_size]
        padding += max(batch) * len(batch) - sum(batch)
    return padding


def _ratio(padded: int, real: int) -> float | None:
    return round(padded / real, 6) if real else None


def padding_report(keyed_lengths: Iterable[tuple[str, int]], upper_bounds: Sequence[int],
                   batch_size: int = PADDING_BATCH_SIZE) -> dict[str, Any]:
    """Examples, real tokens and padding of one split, per bucket and overall, bucketed versus not.

    `keyed_lengths` holds (order key, length) per example; examples are batched in order-key order (see
    PADDING_ORDER). Padding ratios are pad positions / real tokens.
    """
    ordered = [length for _, length in sorted(keyed_lengths)]
    per_bucket: list[list[int]] = [[] for _ in upper_bounds]
    for length in ordered:
        per_bucket[bucket_index(length, upper_bounds)].append(length)
    buckets = {}
    for upper, lengths in zip(upper_bounds, per_bucket):
        if lengths:
            padded = _padding_tokens(lengths, batch_size)
            buckets[bucket_dir_name(upper)] = {
                "upper_bound": upper, "examples": len(lengths), "real_tokens": sum(lengths),
                "padded_tokens": padded, "padding_ratio": _ratio(padded, sum(lengths))}
    real = sum(ordered)
    bucketed = sum(bucket["padded_tokens"] for bucket in buckets.values())
    unbucketed = _padding_tokens(ordered, batch_size)
    return {
        "examples": len(ordered),
        "real_tokens": real,
        "buckets": buckets,
        "bucketed": {"padded_tokens": bucketed, "padding_ratio": _ratio(bucketed, real)},
        "unbucketed": {"padded_tokens": unbucketed, "padding_ratio": _ratio(unbucketed, real)},
    }


def _bucket_folder_and_record(
    encoded: tuple[int, str, bytes], upper_bounds: Sequence[int]
) -> tuple[str, bytes]:
    return bucket_of(encoded[0], upper_bounds), encoded[2]


def _encode(instance: dict[str, Any], coder: tft.coders.ExampleProtoCoder) -> tuple[int, str, bytes]:
    """(length, order key, serialized tf.Example). The order key hashes the example's values, not its
    serialized bytes: proto map fields serialize in no guaranteed order, which would change the order.
    `coder` returns tf.Example protos (serialized=False), serialized here with a fixed map order so that the
    written bytes are the same in every process."""
    token_ids = [int(i) for i in instance[TOKEN_IDS]]
    content = json.dumps([token_ids, int(instance[LABEL_KEY])]).encode("utf-8")
    example = coder.encode(instance).SerializeToString(deterministic=True)
    return int(instance[LENGTH_KEY]), hashlib.sha256(content).hexdigest(), example


def _write_bucketed(instances, split: str, split_folder: Path, report_path: Path, coder,
                    upper_bounds: Sequence[int]) -> None:
    """Writes one split's transformed instances, partitioned by length bucket, plus its padding report."""
    import apache_beam as beam

    from library.tfrecord_io import WriteDeterministicTFRecords
    upper_bounds = list(upper_bounds)
    keyed = instances | f"Encode[{split}]" >> beam.Map(_encode, coder)
    # One writer for all buckets: a bucket without examples gets no folder; a re-run writes the same bytes.
    _ = (keyed
         | f"ByBucket[{split}]" >> beam.Map(_bucket_folder_and_record, upper_bounds)
         | f"WriteBuckets[{split}]" >> WriteDeterministicTFRecords(str(split_folder)))
    _ = (
        keyed
        | f"OrderKeyAndLength[{split}]" >> beam.Map(lambda encoded: (encoded[1], encoded[0]))
        | f"AllLengths[{split}]" >> beam.combiners.ToList()
        | f"PaddingReport[{split}]" >> beam.Map(padding_report, upper_bounds)
        | f"ToJson[{split}]" >> beam.Map(json.dumps)
        | f"WriteReport[{split}]"
        >> beam.io.WriteToText(str(report_path), num_shards=1, shard_name_template="")
    )


# ----------------------------------------------------------------------------------------------------------
# The component


def _raw_file_patterns(examples_uri: Path) -> dict[str, list[str]]:
    """Each split's example files (of every span of a stream)."""
    patterns, missing = {}, []
    for split in SPLITS:
        patterns[split] = examples_files(examples_uri, split)
        if not patterns[split]:
            missing.append(example_file_pattern(split_dir(examples_uri, split)))
    if missing:
        raise ComponentError(f"the examples artifact has no files matching: {', '.join(missing)}")
    return patterns


def run(inputs: dict[str, Artifact], output_dir: Path, config: TransformConfig,
        runtime: Runtime) -> dict[str, Artifact]:
    # Heavy libraries are imported in run(), not at the top (see contract/artifacts.py).
    import tensorflow_transform as tft
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
    output_dir = Path(output_dir)
    raw_schema = load_raw_schema(inputs[SCHEMA].uri)
    patterns = _raw_file_patterns(inputs[EXAMPLES].uri)
    upper_bounds = config.bucket_upper_bounds()

    graph_dir = output_dir / TRANSFORM_GRAPH
    examples_dir = output_dir / TRANSFORMED_EXAMPLES
    # TFT's temporary files and the per-split reports
    scratch_dir = output_dir / ".transform_tmp"
    for folder in (graph_dir, examples_dir, scratch_dir):
        folder.mkdir(parents=True, exist_ok=True)
    report_paths = {split: scratch_dir / f"padding_{split}.json" for split in SPLITS}

    runtime.log(f"transform: analyzing train, transforming {', '.join(SPLITS)} (text={config.text_features}, "
                f"vocab top {config.vocab_size}, max_length {config.max_length}, buckets {upper_bounds})")
    _transform_with_beam(config, raw_schema, patterns, graph_dir, examples_dir, scratch_dir, report_paths,
                         runtime.beam_args)

    make_saved_model_reproducible(graph_dir / tft.TFTransformOutput.TRANSFORM_FN_DIR,
                                  [str(scratch_dir), str(scratch_dir.resolve())])
    # WriteTransformFn leaves out the raw metadata that TFTransformOutput.raw_metadata reads.
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(raw_schema),
                               str(graph_dir / tft.TFTransformOutput.RAW_METADATA_DIR))
    reports = {split: json.loads(report_paths[split].read_text(encoding="utf-8")) for split in SPLITS}
    check_rows_arrived("transform", {split: reports[split]["examples"] for split in SPLITS}, inputs[EXAMPLES])
    if reports["train"]["examples"] == 0:
        raise ComponentError("the train split has no examples; nothing to build a vocabulary from")
    # a split without examples has no bucket folders, but its folder exists
    for split in SPLITS:
        split_dir(examples_dir, split).mkdir(exist_ok=True)
    shutil.rmtree(scratch_dir)

    vocab_size = tft.TFTransformOutput(str(graph_dir)).vocabulary_size_by_name(VOCAB_FILENAME)
    model_input = _model_input(config, vocab_size, upper_bounds)
    write_model_input(graph_dir, model_input)
    write_buckets(examples_dir, {
        "batch_size": PADDING_BATCH_SIZE, "order": PADDING_ORDER, "bucket_upper_bounds": upper_bounds,
        "splits": reports})

    runtime.log(f"transform: vocabulary {vocab_size} tokens; rows "
                + ", ".join(f"{split} {reports[split]['examples']}" for split in SPLITS)
                + f"; train padding ratio at batch {PADDING_BATCH_SIZE}: bucketed "
                f"{reports['train']['bucketed']['padding_ratio']}, unbucketed "
                f"{reports['train']['unbucketed']['padding_ratio']}")
    return _artifacts(graph_dir, examples_dir, model_input, reports)


def _transform_with_beam(config: TransformConfig, raw_schema, patterns: dict[str, list[str]], graph_dir: Path,
                         examples_dir: Path, scratch_dir: Path, report_paths: dict[str, Path],
                         beam_args: tuple[str, ...]) -> None:
    """The Beam job: analyze train, transform every split with the same transform_fn, write the transform
    graph and each split's bucketed examples and padding report."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    upper_bounds = config.bucket_upper_bounds()
    sources = {split: tfxio.TFExampleRecord(file_pattern=patterns[split], schema=raw_schema,
                                            telemetry_descriptors=["agnews_pipeline", "transform"])
               for split in SPLITS}
    with beam.Pipeline(options=pipeline_options(beam_args)) as pipeline:
        with tft_beam.Context(temp_dir=str(scratch_dir / "tft"), force_tf_compat_v1=False):
            raw = {split: pipeline | f"Read{split}" >> sources[split].BeamSource() for split in SPLITS}
            # Analyze on train only, so eval/test words unseen in train are out-of-vocabulary, as at serving.
            (train_transformed, transformed_metadata), transform_fn = (
                raw["train"],
                sources["train"].TensorAdapterConfig(),
            ) | "AnalyzeAndTransformTrain" >> tft_beam.AnalyzeAndTransformDataset(
                make_preprocessing_fn(config)
            )
            transformed = {"train": train_transformed}
            for split in SPLITS[1:]:
                transformed[split], _ = (
                    ((raw[split], sources[split].TensorAdapterConfig()), transform_fn)
                    | f"Transform{split}" >> tft_beam.TransformDataset())
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(str(graph_dir))
            coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema, serialized=False)
            for split in SPLITS:
                _write_bucketed(
                    transformed[split],
                    split,
                    split_dir(examples_dir, split),
                    report_paths[split],
                    coder,
                    upper_bounds,
                )


def _model_input(config: TransformConfig, vocab_size: int, upper_bounds: list[int]) -> ModelInputSpec:
    """What the trainer, the evaluator and serving need to know about the transform's output."""
    return ModelInputSpec(
        # ids 0 (padding) .. V + oov
        embedding_input_dim=vocab_size + config.num_oov_buckets + 1,
        vocab_size=vocab_size,
        num_oov_buckets=config.num_oov_buckets,
        max_length=config.max_length,
        num_classes=NUM_CLASSES,
        text_features=config.text_features,
        bucket_upper_bounds=tuple(upper_bounds),
        padding_id=PADDING_ID,
        vocab_filename=VOCAB_FILENAME,
    )


def _artifacts(graph_dir: Path, examples_dir: Path, model_input: ModelInputSpec,
               reports: dict[str, Any]) -> dict[str, Artifact]:
    """The transform_graph and transformed_examples artifacts with their properties (rows, padding ratios)."""
    return {
        TRANSFORM_GRAPH: Artifact(
            TRANSFORM_GRAPH,
            graph_dir,
            {"vocab_size": model_input.vocab_size, "embedding_input_dim": model_input.embedding_input_dim},
        ),
        TRANSFORMED_EXAMPLES: Artifact(
            TRANSFORMED_EXAMPLES,
            examples_dir,
            {
                "rows": {split: reports[split]["examples"] for split in SPLITS},
                "train_bucket_examples": {
                    name: bucket["examples"] for name, bucket in reports["train"]["buckets"].items()
                },
                "padding_batch_size": PADDING_BATCH_SIZE,
                "padding_ratio_bucketed": {
                    split: reports[split]["bucketed"]["padding_ratio"] for split in SPLITS
                },
                "padding_ratio_unbucketed": {
                    split: reports[split]["unbucketed"]["padding_ratio"] for split in SPLITS
                },
            },
        ),
    }
