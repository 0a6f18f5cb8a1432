"""Ingest's light side: where the rows come from, worked out without TensorFlow, TFDS or Beam.

A run's data is `ingest.data`: "tfds" (TensorFlow Datasets `ag_news_subset`) or "csv:DIR", a folder holding
train.csv and test.csv, or a stream: test.csv (the fixed test set) beside span folders (2026-12-01/, 0007/,
...) each with a train.csv, of which a window of spans is trained on (library/spans.py). This module names the
CSV files, the Source of each file and a stream's window, and declares the step (SPEC). The source list, row
count and fingerprint its hooks name (sources, source_rows, external_fingerprint) build on it in executor.py:
they may go through Beam's FileSystems (a remote folder) or TFDS, which this module must not import
(pyproject.toml's import contracts).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from contract.artifacts import ComponentError
from contract.component_spec import ComponentSpec
from contract.data_config import IngestConfig
from contract.names import EXAMPLES
from library import spans as span_stream

CSV_FILE_NAMES = {"train": "train.csv", "test": "test.csv"}

# The pipeline's source step: its outside data (ingest.data) fingerprints the run's data.
SPEC = ComponentSpec(__name__, executor="components.ingest.executor", outputs=(EXAMPLES,),
                     config_section="ingest", source="data", external="external_fingerprint",
                     input_rows="source_rows")


@dataclass(frozen=True)
class Source:
    """One source file and where its rows go: name None (a single folder: rows go to the artifact's own split
    folders), "" (a stream's fixed test set) or a span's name (library/layouts.py source_folder)."""
    name: str | None
    # the source split: "train" or "test"
    split: str
    path: str


def csv_dir(config: IngestConfig) -> str:
    folder = config.data[len("csv:"):]
    return folder if "://" in folder else str(Path(folder).expanduser().resolve())


def reads_stream(config: IngestConfig) -> bool:
    folder = csv_dir(config)
    return "://" not in folder and span_stream.is_stream(folder, config.window.pattern)


def stream_spans(config: IngestConfig) -> list[span_stream.Span] | None:
    """Every span of a local stream source, oldest first, before any window rule; None if the source is not a
    stream (TFDS, one folder, a remote folder)."""
    if not config.data.startswith("csv:") or not reads_stream(config):
        return None
    return span_stream.discover_spans(csv_dir(config), config.window.pattern)


def window(config: IngestConfig) -> list[span_stream.Span]:
    """The spans of a stream source the run trains on, oldest first (a ComponentError of a window kind
    if it cannot be formed: library/spans.py); the spans of `window.held_out` (quarantined or rejected in the
    metadata store, filled in by the CLI) are left out like those of `window.exclude`."""
    folder = csv_dir(config)
    test_file = os.path.join(folder, span_stream.FIXED_TEST_FILE)
    if not os.path.isfile(test_file):
        raise ComponentError(
            f"ingest: {folder} holds span folders but no test.csv (the fixed test set every run "
            "is evaluated on); add it beside the span folders"
        )
    spans = span_stream.discover_spans(folder, config.window.pattern)
    settings = config.window
    return span_stream.select_window(spans, num_spans=settings.num_spans, min_spans=settings.min_spans,
                                     skip_recent=settings.skip_recent, exclude=settings.exclude,
                                     newest=settings.newest, where=f"--data {config.data}",
                                     held_out=settings.held_out)


def check_one_span(config: IngestConfig) -> None:
    """A source that is not a stream is one span: it can neither be pinned nor meet min_spans above 1."""
    where = f"--data {config.data} is one data set, not a stream of spans"
    if config.window.newest:
        raise ComponentError(
            f"ingest: {where}, so span {config.window.newest!r} cannot be found. Nothing was trained.",
            span_stream.SPAN_NOT_FOUND,
        )
    if config.window.min_spans > 1:
        raise ComponentError(f"ingest: {where}: one span, fewer than ingest.window.min_spans = "
                             f"{config.window.min_spans}. Nothing was trained.", span_stream.TOO_FEW_SPANS)


def source_name(config: IngestConfig) -> str:
    return f"csv:{csv_dir(config)}" if config.data.startswith("csv:") else f"tfds:{config.tfds_name}"
