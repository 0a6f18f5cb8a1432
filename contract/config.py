"""Typed pipeline configuration: the schema, one frozen dataclass per component (section), each validating its
values when it is built. An unknown key, or a value of the wrong type or range, raises ConfigError before any
work starts; contract/config_loading.py builds the Config from its sources. The data steps' sections (ingest,
validate, transform) are in contract/data_config.py; the error and its checks in contract/config_checks.py.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.config_checks import ConfigError, require
from contract.data_config import IngestConfig, TransformConfig, ValidateConfig
from contract.units import parse_duration, parse_size


@dataclass(frozen=True)
class PipelineConfig:
    root: str = "pipeline_root"
    # Passed verbatim to Beam's PipelineOptions, e.g. ["--direct_num_workers=2"] or another runner's flags.
    beam_args: tuple[str, ...] = ()
    # Where the Beam steps (ingest, validate, transform, evaluator) run: "direct" (Beam's DirectRunner, or the
    # runner named in beam_args) or "dask" (a dask.distributed cluster through engines/dask/).
    beam_runner: str = "direct"
    # scheduler, e.g. tcp://HOST:8786; empty: a local cluster started for each step
    dask_address: str = ""
    # worker processes of that local cluster
    dask_workers: int = 2
    # Memory limit of each local worker, a size ("4GiB", "3000MB": contract/units.py); auto: machine /
    # workers.
    dask_worker_memory: str = "auto"
    # A Beam step on dask fails (one line, a cluster state dump in its folder) when no task starts or finishes
    # for this long, or every worker is paused (memory) for min(this, 60 s).
    dask_stall_seconds: float = 600.0
    seed: int = 42
    # While a step without progress lines of its own runs (the Beam steps), one line with the elapsed time and
    # an ETA every this many seconds; 0: none.
    progress_seconds: float = 30.0
    # Free space a step needs under the pipeline root before it starts, e.g. "2GB" (10^9) or "2GiB" (2^30);
    # "auto": 64 MB plus 2 KB per row of the input data; "0": no check.
    min_free_space: str | int = "auto"
    # A run (or retrain) that has run this long is ended like SIGTERM, e.g. "2h", "90min", or seconds
    # (--deadline; contract/units.py's durations); "": none.
    deadline: str | float = ""

    def __post_init__(self):
        try:
            if self.min_free_space != "auto":
                parse_size(self.min_free_space)
        except ValueError as error:
            raise ConfigError(f"pipeline.min_free_space must be auto or a size: {error}") from None
        try:
            require(
                not self.deadline or parse_duration(self.deadline) > 0, "pipeline.deadline must be positive"
            )
        except ValueError as error:
            raise ConfigError(f"pipeline.deadline (--deadline) must be a duration: {error}") from None
        require(self.seed >= 0, f"pipeline.seed must be >= 0, got {self.seed}")
        require(
            self.progress_seconds >= 0,
            f"pipeline.progress_seconds must be >= 0 (0 = no progress lines), got {self.progress_seconds}",
        )
        require(self.beam_runner in ("direct", "dask"),
                 f"pipeline.beam_runner must be 'direct' or 'dask', got {self.beam_runner!r} (other runners: "
                 "--beam-arg=--runner=NAME plus that runner's flags)")
        require(self.dask_workers >= 1, f"pipeline.dask_workers must be >= 1, got {self.dask_workers}")
        require(self.dask_stall_seconds > 0, f"pipeline.dask_stall_seconds must be > 0, got "
                 f"{self.dask_stall_seconds}")
        try:
            if self.dask_worker_memory != "auto":
                parse_size(self.dask_worker_memory)
        except ValueError as error:
            raise ConfigError(f"pipeline.dask_worker_memory must be auto or a size: {error}") from None
        require(not self.dask_address or self.beam_runner == "dask",
                 "--dask-address needs --beam-runner dask")
        if self.beam_runner == "dask":
            require(not any(arg.startswith("--runner") for arg in self.beam_args),
                     "--beam-runner dask and --beam-arg=--runner=... both choose a runner; give one of them")
        # The Beam flags themselves are parsed by Beam's option classes where they are used
        # (library/beam_options.check_pipeline_options, called before any step runs).

    def deadline_seconds(self) -> float | None:
        if not self.deadline:
            return None
        return parse_duration(self.deadline)


SECRET_NAME = re.compile(r"key|secret|token|password|passwd|credential", re.IGNORECASE)
REDACTED = "***"


def redact_args(args: list[str] | tuple[str, ...]) -> list[str]:
    """Option values whose names look secret (`--s3_secret_access_key=...`, `--api-token VALUE`) replaced by
    ***; what is stored in the metadata store, written to reports and logged."""
    redacted, hide_next = [], False
    for arg in args:
        name, sep, _ = arg.partition("=")
        if hide_next and not arg.startswith("-"):
            redacted.append(REDACTED)
        elif arg.startswith("-") and SECRET_NAME.search(name):
            redacted.append(f"{name}={REDACTED}" if sep else arg)
        else:
            redacted.append(arg)
        hide_next = arg.startswith("-") and not sep and bool(SECRET_NAME.search(name))
    return redacted


@dataclass(frozen=True)
class TunerConfig:
    # a name in library.models.ARCHITECTURES; the trainer builds what the tuner names
    architecture: str = "bilstm"
    # False (--no-tune): the architecture's default hyperparameters, no search
    enabled: bool = True
    # hyperband | bayesian | random
    algorithm: str = "hyperband"
    max_trials: int = 8
    max_epochs: int = 3
    # Trials train on at most this many train rows (a seeded random subsample with the split's length
    # distribution; 0: every row). Hyperparameters found on 20,000 rows carry over to the full split, and
    # on the 120,000-row AG News the search costs a sixth; the trainer always uses every row.
    train_subsample_rows: int = 20_000
    # val_loss (minimised) | val_accuracy (maximised), measured on the eval split
    objective: str = "val_loss"
    # Hyperparameters held fixed instead of searched (also applied with --no-tune), e.g. ["batch_size=128"].
    fixed_hyperparameters: tuple[str, ...] = ()
    # Not a setting of its own: always trainer.pretrained_embeddings (Config copies it), so that the search
    # starts from the same vectors and their fingerprint is part of the tuner's cache key.
    pretrained_embeddings: str = ""
    # When a run whose tuner inputs changed searches again, instead of reusing the newest hyperparameters this
    # root tuned for the same architecture and search: "always", "on_drift", "every N retrains" (one run in N
    # searches) or "every DURATION" ("every 30d": once the reused search is that old; units s m h d w). Every
    # policy searches on the first run, for a changed search, on drift found by validate, and with --retune.
    retune: str = "every 30d"

    def __post_init__(self):
        require(self.objective in ("val_loss", "val_accuracy"),
                 f"tuner.objective must be val_loss or val_accuracy, got {self.objective!r}")
        for item in self.fixed_hyperparameters:
            name, sep, value = item.partition("=")
            require(bool(sep and name.strip() and value.strip()),
                     f"tuner.fixed_hyperparameters entries must look like name=value, got {item!r}")
        # architecture: checked against the model registry by the tuner (components/tuner.check_config)
        require(self.algorithm in ("hyperband", "bayesian", "random"),
                 f"tuner.algorithm must be hyperband, bayesian or random, got {self.algorithm!r}")
        require(self.max_trials >= 1, f"tuner.max_trials must be >= 1, got {self.max_trials}")
        require(self.max_epochs >= 1, f"tuner.max_epochs must be >= 1, got {self.max_epochs}")
        require(self.train_subsample_rows >= 0, "tuner.train_subsample_rows must be >= 0")
        # validates retune
        self.retune_policy()

    def retune_policy(self) -> RetunePolicy:
        """tuner.retune parsed: RetunePolicy("always" | "on_drift" | "retrains" | "seconds", every)."""
        text = " ".join(str(self.retune).split())
        if text in ("always", "on_drift"):
            return RetunePolicy(text, 0)
        count = re.fullmatch(r"every (\d+) retrains?", text)
        if count and int(count.group(1)) >= 1:
            return RetunePolicy("retrains", int(count.group(1)))
        period = _duration_or_none(text.removeprefix("every ")) if text.startswith("every ") else None
        if period:
            return RetunePolicy("seconds", period)
        raise ConfigError(f"tuner.retune must be always, on_drift, 'every N retrains' (N >= 1) or 'every "
                          f"DURATION' (e.g. 'every 30d', 'every 90min'; units s, sec, m, min, h, d, w), "
                          f"got {self.retune!r}")


def _duration_or_none(text: str) -> float | None:
    """The seconds of a positive duration (contract/units.py's grammar), or None."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


class RetunePolicy(typing.NamedTuple):
    # always | on_drift | retrains | seconds
    kind: str
    # retrains: search in one run of this many; seconds: search once the reused one is this old
    every: float


def address_problem(address: Any) -> str | None:
    """What is wrong with one "HOST:PORT" worker address, or None."""
    host, sep, port = str(address).rpartition(":")
    if (
        not isinstance(address, str)
        or not sep
        or not host
        or not port.isdigit()
        or not 1 <= int(port) <= 65535
    ):
        return f"{address!r} is not HOST:PORT (a port from 1 to 65535)"
    return None


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 10
    early_stopping_patience: int = 2
    # An epoch counts as better only when it lowers the eval loss (mean nats per row) by more than this: a
    # model that already fits (measured at 120k generated rows: 0.0016, 0.0009, 0.0005) would otherwise pay
    # for an epoch of about 37 s to move the loss by a few ten-thousandths. 0 = any decrease counts.
    early_stopping_min_delta: float = 0.001
    # An epoch is at most this many train rows: a larger train split is read across several epochs (every row
    # once before any repeats), so early stopping looks at the eval loss every this many rows, not once per
    # pass over 1.1M rows. 0 = every epoch is the whole split. Below it (5,551 or 127,600 rows) nothing
    # changes.
    max_rows_per_epoch: int = 200_000
    # default | mirrored | multi_worker_mirrored
    strategy: str = "default"
    # multi_worker_mirrored: "HOST:PORT" of every training worker; index 0 is the chief, which the trainer
    # step runs on this machine; each other one runs `agnews-pipeline train-worker --index I` (README).
    workers: tuple[str, ...] = ()
    # Seconds every worker has to join a multi-worker job (and the longest a collective may wait for one).
    worker_timeout: float = 300.0
    shuffle_buffer: int = 10_000
    # Word vectors to start the embedding from (word2vec text/binary, GloVe, fastText .vec, gensim .kv);
    # '' = a randomly initialised embedding.
    pretrained_embeddings: str = ""
    # tuned (the tuner's choice; with --no-tune: fine-tuned) | true | false | "after_epochs N" (frozen for N
    # epochs, then fine-tuned). Only used with pretrained_embeddings.
    embeddings_trainable: bool | str = "tuned"
    # Share of the train split's tokens the vectors must cover; below it the trainer warns loudly.
    min_embedding_coverage: float = 0.5
    # Start from the served model when its architecture and hyperparameters are the ones trained now:
    # its weights, with the embedding rows carried over token by token (new tokens start fresh);
    # --from-scratch turns it off for a run.
    warm_start: bool = True
    # Early-stopping patience of a warm-started run: it starts near its best (measured: its best epoch is the
    # first), so one epoch without improvement ends it instead of early_stopping_patience.
    warm_start_patience: int = 1
    # The exported model part runs compiled with XLA over a few padded shapes (library/xla_buckets.py; about
    # 30x faster per call, compiled at warm-up). false: a plain graph (for a TF Serving built without XLA).
    export_xla: bool = True

    def __post_init__(self):
        require(self.epochs >= 1, f"trainer.epochs must be >= 1, got {self.epochs}")
        require(0.0 <= self.min_embedding_coverage <= 1.0, "trainer.min_embedding_coverage must be in [0, 1]")
        # validates embeddings_trainable
        self.unfreeze_after_epochs()
        require(self.early_stopping_patience >= 0, "trainer.early_stopping_patience must be >= 0")
        require(
            self.max_rows_per_epoch >= 0,
            f"trainer.max_rows_per_epoch must be >= 0 (0 = the whole split), got {self.max_rows_per_epoch}",
        )
        require(self.warm_start_patience >= 0, "trainer.warm_start_patience must be >= 0")
        require(self.early_stopping_min_delta >= 0, "trainer.early_stopping_min_delta must be >= 0")
        require(
            self.strategy in ("default", "mirrored", "multi_worker_mirrored"),
            f"trainer.strategy must be default, mirrored or multi_worker_mirrored, got {self.strategy!r}",
        )
        self._check_workers()

    def _check_workers(self) -> None:
        require(
            self.worker_timeout > 0, f"trainer.worker_timeout must be > 0 seconds, got {self.worker_timeout}"
        )
        if self.strategy != "multi_worker_mirrored":
            require(
                not self.workers, "trainer.workers is only used with trainer.strategy=multi_worker_mirrored"
            )
            return
        require(
            bool(self.workers),
            "trainer.strategy=multi_worker_mirrored needs trainer.workers, HOST:PORT of "
            "every worker with this machine (the chief) first, e.g. --set "
            "trainer.workers=[10.0.0.1:23456,10.0.0.2:23456]",
        )
        for address in self.workers:
            require(address_problem(address) is None, f"trainer.workers: {address_problem(address)}")
        require(len(set(self.workers)) == len(self.workers), "trainer.workers lists a worker twice")

    def unfreeze_after_epochs(self) -> int | None:
        """embeddings_trainable as a number of frozen epochs: 0 = trainable, epochs = frozen throughout,
        None = the tuner's choice."""
        value = self.embeddings_trainable
        if isinstance(value, bool):
            return 0 if value else self.epochs
        if value == "tuned":
            return None
        name, _, count = value.partition(" ")
        require(name == "after_epochs" and count.strip().isdigit() and 1 <= int(count) < self.epochs,
                 f"trainer.embeddings_trainable must be true, false, tuned or 'after_epochs N' with "
                 f"1 <= N < trainer.epochs ({self.epochs}), got {value!r}")
        return int(count)


@dataclass(frozen=True)
class EvaluatorConfig:
    # absolute bar for blessing
    min_accuracy: float = 0.80
    # Allowed drop below the anchor: the best accuracy of the baseline (the served model) and the last
    # `anchor_versions` served versions, on the same test rows (0.005 = 0.5 points).
    max_accuracy_drop: float = 0.005
    anchor_versions: int = 5
    # A candidate significantly worse than the baseline on the same rows (one-sided exact McNemar test,
    # p < significance) is refused; 0: no test.
    significance: float = 0.05

    def __post_init__(self):
        require(0.0 <= self.min_accuracy <= 1.0, "evaluator.min_accuracy must be in [0, 1]")
        require(0.0 <= self.max_accuracy_drop <= 1.0, "evaluator.max_accuracy_drop must be in [0, 1]")
        require(self.anchor_versions >= 0, "evaluator.anchor_versions must be >= 0")
        require(0.0 <= self.significance < 1.0, "evaluator.significance must be in [0, 1)")


@dataclass(frozen=True)
class PusherConfig:
    # empty: <pipeline root>/serving/agnews (made absolute when the configuration loads)
    serving_dir: str = ""


@dataclass(frozen=True)
class RetentionConfig:
    """What `gc` keeps, and `retrain` when apply_after_retrain: the lineage of the last `served_versions`
    served versions (older versions leave the serving folder) plus the `runs` newest runs. 0: that part is off
    (keep every served version; `gc` then needs --keep)."""
    served_versions: int = 0
    runs: int = 0
    apply_after_retrain: bool = False

    def __post_init__(self):
        require(self.served_versions >= 0, "retention.served_versions must be >= 0")
        require(self.runs >= 0, "retention.runs must be >= 0")
        require(not self.apply_after_retrain or self.runs >= 1,
                 "retention.apply_after_retrain needs retention.runs >= 1 (the newest run is always kept)")


@dataclass(frozen=True)
class Config:
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    tuner: TunerConfig = field(default_factory=TunerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    pusher: PusherConfig = field(default_factory=PusherConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    def __post_init__(self):
        vectors = self.trainer.pretrained_embeddings
        require(self.tuner.pretrained_embeddings in ("", vectors),
                 "set the vectors file with trainer.pretrained_embeddings (--pretrained-embeddings); "
                 "the tuner uses the same file")
        object.__setattr__(self, "tuner", dataclasses.replace(self.tuner, pretrained_embeddings=vectors))
        kept = self.retention.served_versions
        require(
            kept == 0 or kept >= self.evaluator.anchor_versions,
            f"retention.served_versions ({kept}) must be 0 or at least evaluator.anchor_versions "
            f"({self.evaluator.anchor_versions}): the gate's anchor is taken from the served versions kept",
        )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def redacted_dict(self) -> dict[str, Any]:
        """to_dict() with secret-looking Beam option values replaced by ***: what the store and reports
        keep."""
        values = self.to_dict()
        values["pipeline"]["beam_args"] = redact_args(values["pipeline"]["beam_args"])
        return values

    def pipeline_root(self) -> Path:
        return Path(self.pipeline.root).resolve()

    def serving_dir(self) -> Path:
        return Path(self.pusher.serving_dir).resolve() if self.pusher.serving_dir else (
            self.pipeline_root() / "serving" / "agnews")
