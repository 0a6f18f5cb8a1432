"""The data steps' configuration sections: ingest (with its stream window), validate (with its drift and
quality checks) and transform. Frozen dataclasses that check their values when built (contract/config.py
gathers every section into Config)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from contract.config_checks import ConfigError, packaged_file, require


@dataclass(frozen=True)
class WindowConfig:
    """Which spans of a stream (a csv:DIR of dated or numbered span folders) a run trains on
    (library/spans.py)."""
    # the newest N spans; 0 = every span
    num_spans: int = 0
    # fewer spans in the window: the run stops before any work (exit 6)
    min_spans: int = 1
    # leave out the newest N spans (e.g. one still being labelled)
    skip_recent: int = 0
    # span names never used
    exclude: tuple[str, ...] = ()
    # Not a setting: the spans the metadata store holds out (quarantined or rejected), filled in by the CLI
    # from the store before a run (`agnews-pipeline spans`); any value given is replaced.
    held_out: tuple[str, ...] = ()
    # pin the newest span: a span name or a date YYYY-MM-DD (--span / --date); '' = the newest
    newest: str = ""
    # a subfolder whose whole name matches is a span
    pattern: str = r"\d{4}-\d{2}-\d{2}|\d+"

    def __post_init__(self):
        require(self.num_spans >= 0, f"ingest.window.num_spans must be >= 0 (0 = all), got {self.num_spans}")
        require(self.min_spans >= 1, f"ingest.window.min_spans must be >= 1, got {self.min_spans}")
        require(self.num_spans == 0 or self.min_spans <= self.num_spans,
                 f"ingest.window.min_spans ({self.min_spans}) is above num_spans ({self.num_spans})")
        require(self.skip_recent >= 0, f"ingest.window.skip_recent must be >= 0, got {self.skip_recent}")
        try:
            re.compile(self.pattern)
        except re.error as error:
            raise ConfigError(f"ingest.window.pattern is not a regular expression: {error}") from None


@dataclass(frozen=True)
class IngestConfig:
    # "tfds" (TensorFlow Datasets ag_news_subset) or "csv:DIR" (DIR holds train.csv and test.csv).
    data: str = "tfds"
    tfds_name: str = "ag_news_subset"
    # empty: TFDS' default (~/tensorflow_datasets)
    tfds_data_dir: str = ""
    # share of the train source hashed into the eval split
    eval_fraction: float = 0.05
    # above this share of quarantined rows, ingest fails
    max_bad_row_fraction: float = 0.01
    window: WindowConfig = field(default_factory=WindowConfig)

    def __post_init__(self):
        require(self.data == "tfds" or (self.data.startswith("csv:") and len(self.data) > 4),
                 f"ingest.data must be 'tfds' or 'csv:DIR', got {self.data!r}")
        require(
            0.0 < self.eval_fraction < 1.0,
            f"ingest.eval_fraction must be in (0, 1), got {self.eval_fraction}",
        )
        require(0.0 <= self.max_bad_row_fraction <= 1.0,
                 f"ingest.max_bad_row_fraction must be in [0, 1], got {self.max_bad_row_fraction}")


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds of the drift checks of a stream's new spans against the served model's window (drift.py);
    a value above its threshold is drift. Chosen from unshifted and shifted spans of AG News (README)."""
    # largest change of one class's share
    label_linf: float = 0.1
    # Jensen-Shannon divergence of the text length histograms (0..1)
    length_js: float = 0.05
    # fewer rows on either side: length_js is not computed
    length_min_rows: int = 200
    # share of the new span's tokens that the reference spans never have
    oov_share: float = 0.25
    # share of the new span's tokens outside the served model's vocabulary
    vocab_oov_share: float = 0.3
    # largest change of one class's share in the served model's predictions
    prediction_linf: float = 0.1
    # fewer held-out rows behind the served model's predicted mix, or rows in the new span: not computed
    prediction_min_rows: int = 100

    def __post_init__(self):
        for name in ("label_linf", "length_js", "oov_share", "vocab_oov_share", "prediction_linf"):
            require(0.0 <= getattr(self, name) <= 1.0, f"validate.drift.{name} must be in [0, 1]")
        require(self.length_min_rows >= 1, "validate.drift.length_min_rows must be >= 1")
        require(self.prediction_min_rows >= 1, "validate.drift.prediction_min_rows must be >= 1")

    def thresholds(self) -> dict[str, float]:
        return {"label_linf": self.label_linf, "length_js": self.length_js, "oov_share": self.oov_share,
                "vocab_oov_share": self.vocab_oov_share, "prediction_linf": self.prediction_linf}


@dataclass(frozen=True)
class QualityConfig:
    """Data-quality checks of a stream's new spans (library/drift.py quality()), apart from drift: a span
    above one of the refusing thresholds is quarantined (validate.on_quality); row_count_change is only
    reported."""
    # |span rows / mean rows of the other spans - 1|: a warning, never a refusal
    row_count_change: float = 0.5
    # share of a span's rows that ingest quarantined (bad CSV rows); in a stream this, not the window-wide
    # ingest.max_bad_row_fraction, decides: a corrupted span is quarantined instead of failing every later run
    bad_row_share: float = 0.01
    # share of a span's rows that repeat an earlier row of the same span
    duplicate_share: float = 0.05
    # share of a span's rows whose text is also in the fixed test set
    test_overlap_share: float = 0.01

    def __post_init__(self):
        require(self.row_count_change >= 0, "validate.quality.row_count_change must be >= 0")
        for name in ("bad_row_share", "duplicate_share", "test_overlap_share"):
            require(0.0 <= getattr(self, name) <= 1.0, f"validate.quality.{name} must be in [0, 1]")


@dataclass(frozen=True)
class ValidateConfig:
    # '' = the schema shipped with the package (schemas/ag_news_raw.pbtxt); a relative path is taken from the
    # working directory.
    schema: str = ""
    # A stream's new span drifting from the served model's window: warn (train anyway, span marked drifted) or
    # fail (exit 8, the span quarantined until `agnews-pipeline spans accept`).
    on_drift: str = "warn"
    drift: DriftConfig = field(default_factory=DriftConfig)
    # A new span failing a data-quality check (empty, duplicates, test-set rows): fail (exit 8, quarantined)
    # or warn.
    on_quality: str = "fail"
    quality: QualityConfig = field(default_factory=QualityConfig)
    # Not a setting: "name:sha256" of the spans accepted with `agnews-pipeline spans accept` whose file is
    # unchanged, filled in by the CLI from the metadata store; they are never refused again.
    accepted_spans: tuple[str, ...] = ()

    def __post_init__(self):
        require(
            self.on_drift in ("warn", "fail"),
            f"validate.on_drift must be warn or fail, got {self.on_drift!r}",
        )
        require(self.on_quality in ("warn", "fail"),
                 f"validate.on_quality must be warn or fail, got {self.on_quality!r}")

    def schema_path(self) -> Path:
        return Path(self.schema).resolve() if self.schema else packaged_file("schemas", "ag_news_raw.pbtxt")


@dataclass(frozen=True)
class TransformConfig:
    # or "title"
    text_features: str = "title_description"
    vocab_size: int = 20_000
    num_oov_buckets: int = 1
    # tokens kept per example; longer texts are truncated
    max_length: int = 256
    bucket_boundaries: tuple[int, ...] = (8, 16, 24, 32, 48, 64, 96, 128, 256)

    def __post_init__(self):
        require(
            self.text_features in ("title", "title_description"),
            f"transform.text_features must be 'title' or 'title_description', got {self.text_features!r}",
        )
        require(self.vocab_size >= 1, f"transform.vocab_size must be >= 1, got {self.vocab_size}")
        require(
            self.num_oov_buckets >= 1, f"transform.num_oov_buckets must be >= 1, got {self.num_oov_buckets}"
        )
        require(self.max_length >= 1, f"transform.max_length must be >= 1, got {self.max_length}")
        bounds = list(self.bucket_boundaries)
        require(len(bounds) >= 1 and all(x >= 1 for x in bounds) and bounds == sorted(set(bounds)),
                 f"transform.bucket_boundaries must be strictly increasing positive integers, got {bounds}")

    def bucket_upper_bounds(self) -> list[int]:
        """Inclusive upper length of each bucket; the last bucket always ends at max_length."""
        return [x for x in self.bucket_boundaries if x < self.max_length] + [self.max_length]
