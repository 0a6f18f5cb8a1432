"""Per-span drift profiles (library/drift.py SpanProfile), cached beside each span's examples.

Ingest, the step that has a span's rows, writes the profile of every span it reads (ingested or re-ingested)
as spans/<span>/profile-<sha256>.json (library/layouts.span_profile_file): the rows, label counts, length
bins and token counts of its good rows (train and eval). A reused span's folder is hard-linked with its
profile, and the name carries the SHA-256 of the span's train.csv, so a corrected span gets a new profile.
Validate merges the cached profiles of a reference window (the served model's training spans) instead of
reading those spans' rows again each week; it reads a span's rows only when its profile is missing (an
artifact from before profiles). TensorFlow is imported where the rows are read.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from contract.files import read_json, write_json_atomic
from library import drift
from library.layouts import span_examples_files, span_profile_file

LABEL = "label"
TEXT_FIELDS = ("title", "description")


def read_rows(files: list[str]) -> tuple[drift.SpanProfile, Counter]:
    """(the drift profile, a Counter of drift.text_key per row) of the raw examples in `files`."""
    import tensorflow as tf  # imported where used: TF is slow to import
    profile, keys = drift.SpanProfile(), Counter()
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        features = tf.train.Example.FromString(record).features.feature
        title, description = (features[name].bytes_list.value[0].decode("utf-8", "replace")
                              if features[name].bytes_list.value else "" for name in TEXT_FIELDS)
        profile.add(int(features[LABEL].int64_list.value[0]), f"{title} {description}")
        keys[drift.text_key(title, description)] += 1
    return profile, keys


def span_files(examples_uri: Path | str, span: str) -> list[str]:
    """The raw example files of one span of a stream's examples (train and eval)."""
    return [file for split in ("train", "eval") for file in span_examples_files(examples_uri, span, split)]


def to_json(profile: drift.SpanProfile) -> dict:
    return {"rows": profile.rows, "labels": {str(k): v for k, v in sorted(profile.labels.items())},
            "lengths": {str(k): v for k, v in sorted(profile.lengths.items())},
            "token_counts": dict(sorted(profile.token_counts.items()))}


def from_json(values: dict) -> drift.SpanProfile:
    return drift.SpanProfile(values["rows"], Counter({int(k): v for k, v in values["labels"].items()}),
                             Counter({int(k): v for k, v in values["lengths"].items()}),
                             Counter(values["token_counts"]))


def write_profile(examples_uri: Path | str, span: str, sha256: str) -> drift.SpanProfile:
    """Reads the span's rows and writes its profile beside them (atomically); ingest calls it."""
    profile, _ = read_rows(span_files(examples_uri, span))
    write_json_atomic(span_profile_file(examples_uri, span, sha256), {"sha256": sha256, **to_json(profile)})
    return profile


def cached_profile(examples_uri: Path | str, span: str, sha256: str) -> drift.SpanProfile | None:
    """The span's cached profile for these bytes, or None when there is none."""
    path = span_profile_file(examples_uri, span, sha256)
    return from_json(read_json(path)) if path.is_file() else None


def profile(examples_uri: Path | str, span: str, sha256: str | None) -> drift.SpanProfile:
    """The cached profile, else one computed from the span's rows (not written: the artifact is ingest's)."""
    cached = cached_profile(examples_uri, span, sha256) if sha256 else None
    return cached if cached is not None else read_rows(span_files(examples_uri, span))[0]
