"""Validate: statistics of the ingested examples, and a check of every example against the raw schema.

Outputs:
  schema/schema.pbtxt          a copy of the schema the examples were validated against
  statistics/statistics.json   per split: rows, label counts, empty title/description counts, and whitespace
                               token lengths (title, description, title+description): min, mean, p50, p90,
                               p99, max
  anomalies/anomalies.json     a list of {split, feature, kind, message, count}

Anomaly kinds (stable ids): missing_feature (present in fewer examples than the schema's presence asks),
wrong_type, wrong_valency (number of values outside the schema's value_count), out_of_domain (an INT value
outside int_domain), unexpected_feature (not in the schema), empty_split (train, eval and test must each hold
examples). Any anomaly fails the component with a message that lists them all.

In a stream of spans, statistics/drift.json and the statistics artifact also hold the drift and data-quality
checks of the new spans (span_checks.py), which may refuse a span (exit 8; the pipeline quarantines it).

The schema file's fingerprint, part of the step's cache key, is in spec.py.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import NamedTuple

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components.validate.span_checks import check_spans, drift_properties
from contract.artifacts import Artifact, ComponentError, Runtime, check_rows_arrived
from contract.data_config import ValidateConfig
from contract.names import ANOMALIES, EXAMPLES, SCHEMA, STATISTICS
from library.beam_options import pipeline_options
from library.layouts import (
    SPLITS,
    example_file_pattern,
    examples_files,
    schema_file,
    split_dir,
    write_anomalies,
    write_statistics,
)

LABEL = "label"
TEXT_FIELDS = ("title", "description")
TOKEN_LENGTH_FIELDS = ("title", "description", "title_description")
# ApproximateQuantiles returns min, p1, ..., p99, max
NUM_QUANTILES = 101
REPORTED_QUANTILES = {"p50": 50, "p90": 90, "p99": 99}
EXAMPLE_VALUES_PER_ANOMALY = 3
# see inspect_example
FACT_KINDS = ("row", "label", "empty", "tokens", "problem")

MISSING_FEATURE = "missing_feature"
WRONG_TYPE = "wrong_type"
WRONG_VALENCY = "wrong_valency"
OUT_OF_DOMAIN = "out_of_domain"
UNEXPECTED_FEATURE = "unexpected_feature"
EMPTY_SPLIT = "empty_split"

_VALUE_LISTS = {schema_pb2.BYTES: "bytes_list", schema_pb2.INT: "int64_list", schema_pb2.FLOAT: "float_list"}


class FeatureRule(NamedTuple):
    """What the schema asks of one feature, in plain values (picklable for Beam workers)."""
    name: str
    # "bytes_list" | "int64_list" | "float_list"
    value_list: str
    # share of examples that must hold the feature
    min_fraction: float
    # examples that must hold the feature
    min_count: int
    # valency bounds; None: unbounded
    min_values: int | None
    max_values: int | None
    # int_domain bounds; None: unbounded
    domain_min: int | None
    domain_max: int | None


def load_schema(path: Path) -> schema_pb2.Schema:
    path = Path(path)
    if not path.is_file():
        raise ComponentError(f"validate: schema file not found: {path} (set validate.schema)")
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), schema_pb2.Schema())
    except text_format.ParseError as error:
        raise ComponentError(f"validate: {path} is not a valid tensorflow_metadata Schema: {error}") from None


def feature_rules(schema: schema_pb2.Schema) -> list[FeatureRule]:
    rules = []
    for feature in schema.feature:
        if feature.type not in _VALUE_LISTS:
            raise ComponentError(f"validate: schema feature {feature.name!r} has unsupported type "
                                 f"{schema_pb2.FeatureType.Name(feature.type)}")
        valency = feature.value_count if feature.HasField("value_count") else None
        domain = feature.int_domain if feature.HasField("int_domain") else None
        rules.append(FeatureRule(
            name=feature.name,
            value_list=_VALUE_LISTS[feature.type],
            min_fraction=feature.presence.min_fraction,
            min_count=feature.presence.min_count,
            min_values=valency.min if valency is not None and valency.HasField("min") else None,
            max_values=valency.max if valency is not None and valency.HasField("max") else None,
            domain_min=domain.min if domain is not None and domain.HasField("min") else None,
            domain_max=domain.max if domain is not None and domain.HasField("max") else None,
        ))
    return rules


# ---------------------------------------------------------------------------------------------- per example


def _token_count(value: bytes) -> int:
    return len(value.decode("utf-8", "replace").split())


def inspect_example(serialized: bytes, split: str, rules: list[FeatureRule]) -> list[tuple]:
    """Everything the statistics and checks need from one example, as ("kind", key, value) facts:
    ("row", split), ("label", (split, label)), ("empty", (split, field)), ("tokens", (split, field), n),
    ("problem", (split, feature, kind), example_value)."""
    import tensorflow as tf  # imported where used: TF is slow to import

    features = tf.train.Example.FromString(serialized).features.feature
    facts: list[tuple] = [("row", split)]
    for rule in rules:
        if rule.name not in features:
            facts.append(("problem", (split, rule.name, MISSING_FEATURE), ""))
            continue
        held = features[rule.name].WhichOneof("kind")
        if held is not None and held != rule.value_list:
            facts.append(("problem", (split, rule.name, WRONG_TYPE), held))
            continue
        values = list(getattr(features[rule.name], held).value) if held else []
        if ((rule.min_values is not None and len(values) < rule.min_values)
                or (rule.max_values is not None and len(values) > rule.max_values)):
            facts.append(("problem", (split, rule.name, WRONG_VALENCY), str(len(values))))
        for value in values if rule.value_list == "int64_list" else ():
            if ((rule.domain_min is not None and value < rule.domain_min)
                    or (rule.domain_max is not None and value > rule.domain_max)):
                facts.append(("problem", (split, rule.name, OUT_OF_DOMAIN), str(value)))
    known = {rule.name for rule in rules}
    facts += [("problem", (split, name, UNEXPECTED_FEATURE), "") for name in features if name not in known]

    # Statistics read the features as the pipeline uses them; malformed ones were reported above.
    labels = features[LABEL].int64_list.value if LABEL in features else []
    if len(labels) == 1:
        facts.append(("label", (split, int(labels[0]))))
    texts = {}
    for field in TEXT_FIELDS:
        values = features[field].bytes_list.value if field in features else []
        if len(values) == 1:
            texts[field] = values[0]
            facts.append(("tokens", (split, field), _token_count(values[0])))
            if not values[0].strip():
                facts.append(("empty", (split, field)))
    if len(texts) == len(TEXT_FIELDS):
        facts.append(("tokens", (split, "title_description"), sum(_token_count(v) for v in texts.values())))
    return facts


# ---------------------------------------------------------------------------------------------- the pipeline


def _split_files(examples_dir: Path) -> dict[str, list[str]]:
    return {split: examples_files(examples_dir, split) for split in SPLITS}


def _compute(examples_dir: Path, files: dict[str, list[str]], rules: list[FeatureRule], summary_path: Path,
             runtime: Runtime) -> list:
    """Runs the Beam pipeline; returns its summary: a list of [kind, key, value]."""
    # heavy libraries are imported where used, not at the top (see contract/artifacts.py)
    import apache_beam as beam
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.transforms.stats import ApproximateQuantiles
    with beam.Pipeline(options=pipeline_options(runtime.beam_args)) as pipeline:
        per_split = []
        for split in SPLITS:
            if not files[split]:
                continue
            per_split.append(
                pipeline
                | f"Files[{split}]" >> beam.Create(files[split])
                | f"Read[{split}]" >> beam.io.ReadAllFromTFRecord(compression_type=CompressionTypes.GZIP)
                | f"Inspect[{split}]" >> beam.FlatMap(inspect_example, split, rules))
        facts = (per_split or [pipeline | "NoSplits" >> beam.Create([])]) | "AllFacts" >> beam.Flatten()
        by_kind = dict(zip(FACT_KINDS, facts | "ByKind" >> beam.Partition(
            lambda fact, _: FACT_KINDS.index(fact[0]), len(FACT_KINDS))))

        counted = [
            by_kind[kind]
            | f"Key[{kind}]" >> beam.Map(lambda fact: (fact[0], fact[1]))
            | f"Count[{kind}]" >> beam.combiners.Count.PerElement()
            | f"Shape[{kind}]" >> beam.Map(lambda item: [item[0][0], item[0][1], item[1]])
            for kind in ("row", "label", "empty", "problem")]
        tokens = by_kind["tokens"] | "TokensByKey" >> beam.Map(lambda fact: (fact[1], fact[2]))
        quantiles = (tokens
                     | "Quantiles" >> ApproximateQuantiles.PerKey(num_quantiles=NUM_QUANTILES)
                     | "ShapeQuantiles" >> beam.Map(lambda item: ["quantiles", item[0], item[1]]))
        means = (tokens
                 | "Means" >> beam.combiners.Mean.PerKey()
                 | "ShapeMeans" >> beam.Map(lambda item: ["mean", item[0], item[1]]))
        problem_values = (by_kind["problem"]
                          | "ProblemValues" >> beam.Map(lambda fact: (fact[1], fact[2]))
                          | "DistinctValues" >> beam.Distinct()
                          | "FirstValues" >> beam.combiners.Top.SmallestPerKey(EXAMPLE_VALUES_PER_ANOMALY)
                          | "ShapeValues" >> beam.Map(lambda item: ["problem_values", item[0], item[1]]))
        _ = ((*counted, quantiles, means, problem_values)
             | "AllResults" >> beam.Flatten()
             | "ToList" >> beam.combiners.ToList()
             | "Json" >> beam.Map(json.dumps)
             | "WriteSummary" >> beam.io.WriteToText(str(summary_path), shard_name_template="", num_shards=1))
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    summary_path.unlink()
    return summary


def _statistics(summary: list, label_domain: range) -> dict:
    """statistics.json's content from the pipeline summary."""
    values: dict = {}
    for kind, key, value in summary:
        values[(kind, *key) if isinstance(key, list) else (kind, key)] = value
    statistics = {}
    for split in SPLITS:
        seen_labels = {key[2] for key in values if key[0] == "label" and key[1] == split}
        token_lengths = {}
        for field in TOKEN_LENGTH_FIELDS:
            quantiles = values.get(("quantiles", split, field))
            if quantiles:
                token_lengths[field] = {
                    "min": quantiles[0], "mean": values[("mean", split, field)],
                    **{name: quantiles[index] for name, index in REPORTED_QUANTILES.items()},
                    "max": quantiles[-1]}
        statistics[split] = {
            "rows": values.get(("row", split), 0),
            "label_counts": {str(label): values.get(("label", split, label), 0)
                             for label in sorted(seen_labels | set(label_domain))},
            "empty_title": values.get(("empty", split, "title"), 0),
            "empty_description": values.get(("empty", split, "description"), 0),
            "token_lengths": token_lengths,
        }
    return statistics


def _anomalies(summary: list, statistics: dict, rules: list[FeatureRule], files: dict[str, list[str]],
               examples_dir: Path) -> list[dict]:
    counts = {tuple(key): count for kind, key, count in summary if kind == "problem"}
    values = {tuple(key): found for kind, key, found in summary if kind == "problem_values"}
    rule_of = {rule.name: rule for rule in rules}
    anomalies = []

    def add(split, feature, kind, message, count):
        anomalies.append(
            {"split": split, "feature": feature, "kind": kind, "message": message, "count": count}
        )

    for split in SPLITS:
        rows = statistics[split]["rows"]
        if rows == 0:
            where = example_file_pattern(split_dir(examples_dir, split))
            add(split, None, EMPTY_SPLIT, f"{split}: the split is empty ("
                f"{'no files match' if not files[split] else 'no examples in'} {where})", 0)
            continue
        for (problem_split, feature, kind), count in sorted(counts.items()):
            if problem_split != split:
                continue
            rule = rule_of.get(feature)
            examples = ", ".join(v for v in values.get((split, feature, kind), []) if v)
            if kind == MISSING_FEATURE:
                present = rows - count
                if present / rows >= rule.min_fraction and present >= rule.min_count:
                    # the schema allows this much absence
                    continue
                message = (f"{split}: feature '{feature}' is missing in {count} of {rows} examples "
                           f"(the schema requires it in {rule.min_fraction:.0%} of examples)")
            elif kind == WRONG_TYPE:
                message = (f"{split}: feature '{feature}' should hold {rule.value_list} values but {count} "
                           f"examples hold {examples}")
            elif kind == WRONG_VALENCY:
                message = (
                    f"{split}: feature '{feature}' should hold {rule.min_values}..{rule.max_values} values "
                    f"but {count} examples do not (value counts seen: {examples})"
                )
            elif kind == OUT_OF_DOMAIN:
                message = (f"{split}: feature '{feature}' has {count} values outside the schema's domain "
                           f"[{rule.domain_min}, {rule.domain_max}] (e.g. {examples})")
            else:
                message = f"{split}: feature '{feature}' in {count} examples is not in the schema"
            add(split, feature, kind, message, count)
    return anomalies


def run(
    inputs: dict[str, Artifact], output_dir: Path, config: ValidateConfig, runtime: Runtime
) -> dict[str, Artifact]:
    examples_dir = Path(inputs[EXAMPLES].uri)
    output_dir = Path(output_dir)
    schema_path = config.schema_path()
    schema = load_schema(schema_path)
    rules = feature_rules(schema)
    label_rule = next((rule for rule in rules if rule.name == LABEL), None)
    label_domain = (range(label_rule.domain_min, label_rule.domain_max + 1)
                    if label_rule and label_rule.domain_min is not None and label_rule.domain_max is not None
                    else range(0))

    schema_dir, statistics_dir, anomalies_dir = (
        output_dir / name for name in (SCHEMA, STATISTICS, ANOMALIES)
    )
    for folder in (schema_dir, statistics_dir, anomalies_dir):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(schema_path, schema_file(schema_dir))

    files = _split_files(examples_dir)
    runtime.log(f"validate: {examples_dir} against {schema_path}")
    summary = _compute(examples_dir, files, rules, output_dir / ".validate-summary.json", runtime)
    statistics = _statistics(summary, label_domain)
    check_rows_arrived("validate", {split: statistics[split]["rows"] for split in SPLITS}, inputs[EXAMPLES])
    anomalies = _anomalies(summary, statistics, rules, files, examples_dir)
    # No absolute paths in the artifact: the same data must give the same bytes wherever it is stored
    # (the metadata store's lineage records where the inputs were).
    write_statistics(statistics_dir, statistics)
    write_anomalies(anomalies_dir, anomalies)

    if anomalies:
        listing = "\n".join(f"  - [{a['kind']}] {a['message']}" for a in anomalies)
        raise ComponentError(f"validate: {len(anomalies)} anomalies in {examples_dir} against the schema "
                             f"{schema_path}:\n{listing}")
    runtime.log(f"validate: {({split: statistics[split]['rows'] for split in SPLITS})} rows, no anomalies")
    drift = check_spans(examples_dir, inputs, statistics_dir, config, runtime)
    return {
        SCHEMA: Artifact(SCHEMA, schema_dir, {
            "source": str(schema_path), "features": [rule.name for rule in rules],
            "sha256": hashlib.sha256(schema_path.read_bytes()).hexdigest()}),
        STATISTICS: Artifact(STATISTICS, statistics_dir, {
            "rows_per_split": {split: statistics[split]["rows"] for split in SPLITS},
            "label_counts": {split: statistics[split]["label_counts"] for split in SPLITS},
            **({} if drift is None else drift_properties(drift))}),
        ANOMALIES: Artifact(ANOMALIES, anomalies_dir, {"count": len(anomalies)}),
    }
