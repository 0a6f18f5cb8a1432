"""The command line of `agnews-pipeline`: build_parser() (every sub-command with its flags and help texts) and
config_from_args(), which turns the parsed flags into the configuration (--config, --set, and the dedicated
flags of FLAG_KEYS)."""
from __future__ import annotations

import argparse
from importlib import metadata

from apps.cli.exit_codes import exit_codes_help
from apps.cli.flags import DURATION_HELP, add_output_flags, command, duration_flag
from apps.cli.serve import add_serve_command
from contract.config_checks import ConfigError
from contract.config_loading import default_config_file, load_config
from library.models import architecture_names  # the registry; imports no Keras
from library.spans import parse_date
from pipeline import dag, interrupts
from pipeline.runner import check_config

DESCRIPTION = ("`agnews-pipeline`: run, retrain, predict, serve, runs, show, diff, spans, gc, rollback, "
               "embeddings, train-worker.")
# Dedicated flags and the configuration key each one sets.
FLAG_KEYS = {
    "data": "ingest.data",
    "eval_fraction": "ingest.eval_fraction",
    "max_bad_fraction": "ingest.max_bad_row_fraction",
    "model": "tuner.architecture",
    "tuning_trials": "tuner.max_trials",
    "tuning_epochs": "tuner.max_epochs",
    "epochs": "trainer.epochs",
    "min_accuracy": "evaluator.min_accuracy",
    "pipeline_root": "pipeline.root",
    "beam_arg": "pipeline.beam_args",
    "beam_runner": "pipeline.beam_runner",
    "dask_address": "pipeline.dask_address",
    "dask_workers": "pipeline.dask_workers",
    "serving_dir": "pusher.serving_dir",
    "pretrained_embeddings": "trainer.pretrained_embeddings",
    "deadline": "pipeline.deadline",
}


def version() -> str:
    """The installed package's version (pyproject.toml's, through the package metadata)."""
    try:
        return metadata.version("agnews-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _add_pipeline_flags(parser: argparse.ArgumentParser, partial_runs: bool) -> None:
    """The flags of `run` and, without --until/--from/--only (`partial_runs`), of `retrain`."""
    _add_data_flags(parser)
    _add_model_flags(parser)
    _add_root_and_beam_flags(parser)
    if partial_runs:
        _add_step_range_flags(parser)
    parser.add_argument(
        "--no-cache", action="store_true", help="run every step even if a cached result exists"
    )
    parser.add_argument("--rerun", action="append", default=[], choices=dag.STEP_NAMES,
                        help="run this step even if cached (later steps re-run when their inputs change)")
    parser.add_argument("--lock-timeout", type=duration_flag, default=0.0, metavar="DURATION",
                        help="how long to wait for another run on the same pipeline root (default 0: fail at "
                             f"once); {DURATION_HELP}")
    parser.add_argument("--metrics-file", metavar="PATH",
                        help="write job metrics in Prometheus' text format to PATH when the command ends "
                             "(e.g. node_exporter's textfile collector folder/agnews.prom)")
    parser.add_argument(
        "--deadline",
        metavar="DURATION",
        help="end the run cleanly, like SIGTERM, once it has run this long (pipeline.deadline): "
        f"{DURATION_HELP}; exit {interrupts.EXIT_DEADLINE}, the run marked timed_out",
    )
    add_output_flags(parser)


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    """The configuration file, --set, and where the data comes from (ingest)."""
    parser.add_argument("--config", help=f"YAML configuration file (every key with its default: "
                                         f"{default_config_file()})")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any configuration value, e.g. --set transform.vocab_size=10000")
    parser.add_argument(
        "--data",
        help="'tfds' (TensorFlow Datasets ag_news_subset) or 'csv:DIR': DIR holds "
        "train.csv and test.csv, or is a stream of spans: test.csv beside dated "
        "or numbered span subfolders (2026-12-01/train.csv, ...), of which a "
        "window is trained on (ingest.window)",
    )
    parser.add_argument(
        "--span", metavar="NAME", help="pin the newest span of a stream (ingest.window.newest)"
    )
    parser.add_argument(
        "--date",
        metavar="YYYY-MM-DD",
        help="pin the newest span by its date, e.g. the scheduled date (ingest.window.newest)",
    )
    parser.add_argument(
        "--eval-fraction", type=float, help="share of the train source used as the eval split"
    )
    parser.add_argument(
        "--max-bad-fraction", type=float, help="fail ingest above this share of quarantined rows"
    )


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """What is tuned and trained, and the accuracy needed for blessing."""
    parser.add_argument("--model", choices=architecture_names(), help="architecture to tune and train")
    parser.add_argument("--tuning-trials", type=int, help="KerasTuner trial budget")
    parser.add_argument("--tuning-epochs", type=int, help="max epochs per tuning trial")
    parser.add_argument("--no-tune", action="store_true", help="skip the search; use the model's defaults")
    parser.add_argument("--retune", action="store_true",
                        help="search the hyperparameters in this run whatever tuner.retune says (= --set "
                             "tuner.retune=always)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train from freshly initialised weights, not from the blessed model (= --set "
                             "trainer.warm_start=false)")
    parser.add_argument("--epochs", type=int, help="training epochs for the final model")
    parser.add_argument(
        "--pretrained-embeddings",
        metavar="PATH",
        help="start the embedding from these word vectors (word2vec, GloVe, fastText .vec, .kv)",
    )
    parser.add_argument("--min-accuracy", type=float, help="absolute test accuracy needed for blessing")


def _add_root_and_beam_flags(parser: argparse.ArgumentParser) -> None:
    """Where artifacts and served versions live, and where the Beam steps run."""
    parser.add_argument("--pipeline-root", help="where artifacts and the metadata store live "
                                                "(default ./pipeline_root)")
    parser.add_argument("--serving-dir", help="TF Serving model folder for pushed versions "
                                              "(default <pipeline root>/serving/agnews)")
    parser.add_argument("--beam-arg", action="append", metavar="FLAG",
                        help="pass a flag to Beam, e.g. --beam-arg=--direct_running_mode=multi_processing")
    parser.add_argument(
        "--beam-runner",
        choices=("direct", "dask"),
        help="where the Beam steps run: direct (default) or dask (a dask.distributed cluster)",
    )
    parser.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                        help="dask scheduler for --beam-runner dask (default: a local cluster per step)")
    parser.add_argument("--dask-workers", type=int, metavar="N",
                        help="worker processes of the local dask cluster (default 2)")


def _add_step_range_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--until", choices=dag.STEP_NAMES, help="stop after this step")
    parser.add_argument(
        "--from",
        dest="from_step",
        choices=dag.STEP_NAMES,
        help="start at this step; earlier steps are not run, their outputs come from their newest "
        "successful execution with the same cache key",
    )
    parser.add_argument("--only", choices=dag.STEP_NAMES, help="run this one step (--from STEP --until STEP)")


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command with its flags; each --help lists only the flags its command accepts."""
    parser = argparse.ArgumentParser(prog="agnews-pipeline", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run_commands(commands)
    _add_predict(commands)
    add_serve_command(commands)
    _add_embeddings(commands)
    _add_train_worker(commands)
    _add_spans(commands)
    _add_store_commands(commands)
    return parser


def _add_run_commands(commands) -> None:
    """`run` and `retrain`, whose --help ends with the exit codes."""
    run = command(commands, "run", "run the pipeline: ingest -> ... -> pusher, reusing cached steps",
                   epilog=exit_codes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_pipeline_flags(run, partial_runs=True)

    retrain = command(commands, "retrain", "scheduled retraining: the whole pipeline under the root's lock, "
                       "skipped when the data is unchanged; pushes only a blessed model",
                       epilog=exit_codes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_pipeline_flags(retrain, partial_runs=False)
    retrain.add_argument("--force", action="store_true", help="run even if the data has not changed")


def _add_predict(commands) -> None:
    predict = command(commands, "predict", "classify raw text lines or an AG News CSV with a SavedModel")
    predict.add_argument("--model-dir", required=True, help="a pushed version folder or a SavedModel folder")
    predict.add_argument(
        "--input", default="-", help="text file (one text per line) or AG News CSV; - = stdin"
    )
    predict.add_argument("--output", default="-", help="JSON lines output file; - = stdout")
    predict.add_argument("--batch-size", type=int, default=256)
    predict.add_argument("--line-numbers", action="store_true",
                         help="add the input line number to each output row ({\"line\": N, ...})")
    add_output_flags(predict, log_file=True)


def _add_embeddings(commands) -> None:
    embeddings = command(commands, "embeddings",
                         "train Word2Vec vectors on a run's train split text (for --pretrained-embeddings)")
    embeddings.add_argument(
        "--from-run", required=True, metavar="RUN", help="run id whose train split to use"
    )
    embeddings.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="vectors file: .kv (gensim), .bin (word2vec binary), .txt or .vec (word2vec text)",
    )
    embeddings.add_argument("--dim", type=int, default=100, help="vector size (default 100)")
    embeddings.add_argument("--window", type=int, default=5, help="context window (default 5)")
    embeddings.add_argument("--min-count", type=int, default=2, help="ignore rarer words (default 2)")
    embeddings.add_argument(
        "--word2vec-epochs", type=int, default=10, help="passes over the text (default 10)"
    )
    embeddings.add_argument("--config", help="YAML configuration file")
    embeddings.add_argument("--pipeline-root", help="default ./pipeline_root")
    add_output_flags(embeddings, log_file=True)


def _add_train_worker(commands) -> None:
    worker = command(commands, "train-worker",
                     "one worker of a multi-worker training job (trainer.strategy multi_worker_mirrored)")
    worker.add_argument(
        "--pipeline-root", required=True, help="the run's pipeline root, shared with this machine"
    )
    worker.add_argument("--workers", required=True, metavar="H0:P0,H1:P1,...",
                        help="the run's trainer.workers, the chief first")
    worker.add_argument(
        "--index", type=int, required=True, help="this worker's position in --workers (1, 2, ...)"
    )
    worker.add_argument(
        "--timeout",
        type=duration_flag,
        default=600.0,
        metavar="DURATION",
        help="how long to wait for the run's training job, and for the workers to join (default "
        f"600 seconds); {DURATION_HELP}",
    )


def _add_spans(commands) -> None:
    spans = commands.add_parser(
        "spans",
        help="list a stream's spans with their state; accept a quarantined span or reject a span",
        description="Without an action: every span of --data with its state (new, ingested, quarantined, "
        "accepted, rejected, excluded), rows, SHA-256, first and last run, and checks. `spans accept "
        "NAME`: the next run trains on the quarantined span. `spans reject NAME`: never train on it.",
    )
    spans.add_argument("action", nargs="?", choices=("accept", "reject"), help="change a span's state")
    spans.add_argument("name", nargs="?", metavar="NAME", help="the span to accept or reject")
    spans.add_argument("--config", help="YAML configuration file")
    spans.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a configuration value, e.g. --set ingest.window.exclude=[2026-12-01]")
    spans.add_argument("--data", help="the stream: 'csv:DIR' (DIR holds test.csv and the span folders)")
    spans.add_argument("--pipeline-root", help="default ./pipeline_root")
    spans.add_argument("--json", action="store_true", help="print JSON for scripts")


def _add_store_commands(commands) -> None:
    """The commands that read or tidy the pipeline root: runs, show, diff, gc, rollback."""
    for name, help_text in (
        ("runs", "list runs"),
        ("show", "show a run's model lineage and artifacts"),
        ("diff", "compare two runs: config, hyperparameters, data, code, metrics, outcome"),
        ("gc", "delete artifacts that no kept run or pushed model needs"),
        ("rollback", "serve VERSION's model again, re-published as the new highest version"),
    ):
        sub = command(commands, name, help_text)
        sub.add_argument("--config", help="YAML configuration file")
        sub.add_argument("--pipeline-root", help="default ./pipeline_root")
        if name in ("runs", "show", "diff"):
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        if name == "runs":
            sub.add_argument("--limit", type=int, default=20)
        if name == "show":
            sub.add_argument("run_id", nargs="?", help="run id (default: the latest run)")
        if name == "diff":
            sub.add_argument("run_a")
            sub.add_argument("run_b")
        if name == "gc":
            sub.add_argument("--keep", type=int, help="N newest successful runs to keep (retention.runs)")
            sub.add_argument("--dry-run", action="store_true")
        if name == "rollback":
            sub.add_argument("version", type=int, metavar="VERSION", help="the served version to serve again")


def config_from_args(args: argparse.Namespace):
    flags = {}
    for attribute, key in FLAG_KEYS.items():
        value = getattr(args, attribute, None)
        if value is not None:
            flags[key] = list(value) if attribute == "beam_arg" else value
    if getattr(args, "no_tune", False):
        flags["tuner.enabled"] = False
    if getattr(args, "retune", False):
        flags["tuner.retune"] = "always"
    if getattr(args, "from_scratch", False):
        flags["trainer.warm_start"] = False
    span, date = getattr(args, "span", None), getattr(args, "date", None)
    if span and date:
        raise ConfigError("--span and --date both pin the newest span; give one of them")
    if date and parse_date(date) is None:
        raise ConfigError(f"--date must be a date YYYY-MM-DD, got {date!r}")
    if span or date:
        flags["ingest.window.newest"] = span or date
    config = load_config(args.config, getattr(args, "set", []), flags)
    check_config(config)
    return config
