"""The flags that several sub-commands share, and how a sub-command is declared: apps/cli/parser.py builds
the command line with them, and each command module that declares its own flags (serve.py) too."""
from __future__ import annotations

import argparse

from contract.units import parse_duration
from pipeline.logs import LOG_FORMATS

DURATION_HELP = "a number of seconds or a duration: 10s, 90min, 2h, 30d, 2w"


def duration_flag(text: str) -> float:
    """argparse type of every duration flag: contract/units.py's one grammar, plain seconds included."""
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def duration_in(unit: float):
    """argparse type of a TF Serving flag whose name carries its unit (--batch-timeout-micros,
    --max-queue-delay-ms): a plain number is in that unit, as TF Serving reads it; a number with a unit is the
    one duration grammar ("2ms", "0.5s"). Returns the value in the flag's unit."""
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return duration_flag(text) / unit
    return parse


def add_output_flags(parser: argparse.ArgumentParser, log_file: bool = False) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show the libraries' output (TensorFlow, Beam, Keras, KerasTuner) live on stderr"
        + ("" if log_file else "; it is always kept in runs/<run_id>/logs/<step>.log"),
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text (default) or json: one JSON object per line (time, level, run_id, step, event, "
        "message, fields)",
    )
    if log_file:
        parser.add_argument(
            "--log-file",
            metavar="PATH",
            help="keep the libraries' output in this file (default: not kept; --verbose shows it)",
        )


def command(commands, name: str, help_text: str, **options) -> argparse.ArgumentParser:
    """A sub-command whose --help starts with its one-line description."""
    return commands.add_parser(name, help=help_text, description=help_text, **options)
