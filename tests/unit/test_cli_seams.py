"""The command line's seams, in-process through apps.cli.main.main: --version, each sub-command's --help (only
the flags it accepts, a description, run/retrain's exit codes), the one duration grammar of every duration
flag, --data's help, and serve's errors through the one error path that honours --log-format json."""
from __future__ import annotations

import json
import re

import pytest
import tomllib
from support.cli import agnews_in_process
from support.paths import PROJECT

from apps.cli.exit_codes import EXIT_MEANINGS, EXIT_USAGE
from apps.cli.main import main
from apps.cli.parser import build_parser, config_from_args
from apps.cli.utils import print_listing


def exits(capsys, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of an argv argparse itself ends (--help, --version, a bad flag)."""
    with pytest.raises(SystemExit) as ended:
        main(argv)
    out, err = capsys.readouterr()
    return ended.value.code, out, err


def test_version_is_the_packages(capsys):
    code, out, _ = exits(capsys, ["--version"])
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert (code, out.strip()) == (0, f"agnews-pipeline {project['version']}")


def test_retrain_help_lists_no_step_range_and_ends_with_the_exit_codes(capsys):
    code, out, _ = exits(capsys, ["retrain", "--help"])
    assert code == 0
    flags = set(re.findall(r"--[a-z-]+", out))
    assert not flags & {"--until", "--from", "--only"}
    assert "--force" in out and "--lock-timeout" in out
    # the description, above the flags
    assert "skipped when the data is unchanged" in out.split("options:")[0]
    table = out[out.index("exit codes:"):].splitlines()[1:]
    assert [line.split(None, 1)[0] for line in table] == [str(code) for code in EXIT_MEANINGS]
    assert [line.split(None, 1)[1] for line in table] == list(EXIT_MEANINGS.values())


def test_retrain_refuses_a_step_range(capsys):
    code, _, err = exits(capsys, ["retrain", "--until", "ingest"])
    assert code == EXIT_USAGE and "unrecognized arguments: --until ingest" in err.strip().splitlines()[-1]


def test_run_help_has_the_step_range_the_exit_codes_and_streams_in_data(capsys):
    _, out, _ = exits(capsys, ["run", "--help"])
    assert {"--until", "--from", "--only"} <= set(re.findall(r"--[a-z-]+", out))
    assert out.rstrip().endswith(EXIT_MEANINGS[max(EXIT_MEANINGS)])
    options = out[out.index("options:"):]
    data_help = " ".join(options[options.index("--data DATA"):options.index("--span NAME")].split())
    assert "stream of spans" in data_help and "2026-12-01/train.csv" in data_help


def test_every_sub_command_describes_itself(capsys):
    commands = build_parser()._subparsers._group_actions[0]
    for action in commands._choices_actions:
        _, out, _ = exits(capsys, [action.dest, "--help"])
        description = "".join(out.split("\n\n")[1].split())  # argparse wraps it, also after a hyphen
        # Its one-line help, or (spans) a longer description of its own.
        assert description == "".join(action.help.split()) or len(description) > len(action.help), action.dest
        assert not description.startswith(("options:", "positionalarguments:")), action.dest


@pytest.mark.parametrize("text, seconds", [("0", 0), ("600", 600), ("1.5", 1.5), ("45s", 45), ("10m", 600),
                                           ("90min", 5400), ("2h", 7200)])
def test_every_duration_flag_takes_the_one_grammar(text, seconds):
    parser = build_parser()
    assert parser.parse_args(["run", "--lock-timeout", text]).lock_timeout == seconds
    assert parser.parse_args(["retrain", "--lock-timeout", text]).lock_timeout == seconds
    assert parser.parse_args(["serve", "--poll-seconds", text]).poll_seconds == seconds
    assert parser.parse_args(["train-worker", "--pipeline-root", "r", "--workers", "h:1,h:2", "--index", "1",
                              "--timeout", text]).timeout == seconds
    if seconds:
        deadline = config_from_args(
            parser.parse_args(["run", "--deadline", text])
        ).pipeline.deadline_seconds()
        assert deadline == seconds


@pytest.mark.parametrize("text, micros, millis", [("1000", 1000, 1000), ("2ms", 2000, 2), ("500us", 500, 0.5),
                                                  ("0.1s", 100_000, 100)])
def test_the_serving_time_flags_take_their_unit_or_the_one_grammar(text, micros, millis):
    """TF Serving's --batch-timeout-micros and our --max-queue-delay-ms: a plain number in the flag's unit, or
    a duration with its unit."""
    parser = build_parser()
    assert parser.parse_args(["serve", "--batch-timeout-micros", text]).batch_timeout_micros == pytest.approx(
        micros)
    delay = parser.parse_args(["serve", "--max-queue-delay-ms", text]).max_queue_delay_ms
    assert delay == pytest.approx(millis)


def test_a_bad_duration_flag_is_one_line(capsys):
    code, _, err = exits(capsys, ["run", "--lock-timeout", "soon"])
    assert code == EXIT_USAGE
    assert (
        "--lock-timeout: 'soon' is not a duration like 600 (seconds), 10s, 90min"
        in err.strip().splitlines()[-1]
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--serving-dir", "{missing}"], "does not exist; push a model first"),
        (["--serving-dir", "{here}", "--poll-seconds", "0"], "--poll-seconds must be positive, got 0"),
        (["--serving-dir", "{here}", "--max-batch-size", "0"], "--max-batch-size must be positive, got 0"),
        (["--serving-dir", "{here}", "--allowed-batch-sizes", "1,x"], "--allowed-batch-sizes must be sizes"),
        (
            ["--serving-dir", "{here}", "--max-queue-delay-ms", "-1"],
            "--max-queue-delay-ms must be 0 (off) or more",
        ),
        (
            # with a flag checked later too: without the port check the command still stops at once (uvloop's
            # bind() would wrap 99999 to 34463 and serve until stopped)
            ["--serving-dir", "{here}", "--port", "99999", "--max-batch-size", "0"],
            "--port must be a port from 0 (any free port) to 65535",
        ),
        (
            ["--serving-dir", "{here}", "--model-version-policy", "bogus"],
            "--model-version-policy must be latest",
        ),
        (["--serving-dir", "{here}", "--version-labels", "{missing}"], "cannot read the version labels file"),
    ],
)
def test_serve_errors_honour_log_format_json(tmp_path, capsys, flags, message):
    argv = [flag.format(missing=tmp_path / "no", here=tmp_path) for flag in flags]
    assert main(["serve", *argv, "--log-format", "json"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1, lines
    record = json.loads(lines[0])
    assert (
        record["level"] == "error"
        and record["message"].startswith("serve: ")
        and message in record["message"]
    )


def test_a_listing_is_json_a_line_when_empty_or_an_aligned_table(capsys):
    """`runs` and `spans` print their rows through print_listing: JSON for --json, one line for none, or a
    table whose columns start at the same place on every line."""
    rows = [{"name": "a", "rows": 1200}, {"name": "longer-name", "rows": None}]

    def cells(row):
        return row["name"], "-" if row["rows"] is None else row["rows"]

    print_listing(rows, True, "none", ("name", "rows"), cells)
    assert json.loads(capsys.readouterr().out) == rows
    print_listing([], False, "no rows here", ("name", "rows"), cells)
    assert capsys.readouterr().out == "no rows here\n"
    print_listing(rows, False, "none", ("name", "rows"), cells)
    table = capsys.readouterr().out.splitlines()
    assert table == ["name         rows", "a            1200", "longer-name  -"]


def test_retrain_reaches_the_pipeline_without_step_range_flags(tmp_path, sample_dir):
    """retrain has no --until/--from/--only, and the code before its run must not read them: a stream with one
    span and ingest.window.min_spans 2 ends as too_few_spans (exit 6), not with a traceback."""
    from support.cli import agnews_in_process
    stream = tmp_path / "stream"
    (stream / "2026-12-01").mkdir(parents=True)
    (stream / "test.csv").write_bytes((sample_dir / "test.csv").read_bytes())
    (stream / "2026-12-01" / "train.csv").write_bytes((sample_dir / "train.csv").read_bytes())
    completed = agnews_in_process("retrain", "--data", f"csv:{stream}", "--pipeline-root", tmp_path / "root",
                                  "--set", "ingest.window.min_spans=2", check_code=6)
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("command", [["rollback", "99"], ["runs"], ["show", "20261201T000000-abc"], ["spans"],
                                     ["spans", "accept", "0001"], ["diff", "a", "b"], ["gc", "--keep", "1"]])
def test_a_command_on_a_root_that_does_not_exist_refuses_and_creates_nothing(tmp_path, command):
    root = tmp_path / "nonexistent"
    refused = agnews_in_process(*command, "--pipeline-root", root, check_code=2)
    assert (
        refused.stderr.strip()
        == f"{command[0]}: no pipeline root at {root}: nothing has run there; give the "
        "--pipeline-root (or the configuration's pipeline.root) of a root a run created"
    )
    assert not root.exists() and list(tmp_path.iterdir()) == []


def test_serve_gives_each_batch_thread_its_share_of_the_cores_by_default():
    from apps.cli.serve import shared_cores

    # 2 batch threads on 2 cores: one intra-op thread each (TensorFlow's own choice, 2 each, oversubscribes)
    assert shared_cores(2, 2) == 1
    assert shared_cores(8, 2) == 4
    assert shared_cores(2, 8) == 1  # --no-batching's many threads: at least one each


def test_serve_workers_share_the_cores_out_by_default():
    from apps.cli.serve import shared_cores, worker_share

    # --workers 2 on 2 cores: one batch thread each, of one intra-op thread: two model calls at once in all
    assert worker_share(2, 2) == 1 and shared_cores(2, worker_share(2, 2) * 2) == 1
    assert worker_share(8, 2) == 4
    assert worker_share(2, 4) == 1  # more workers than cores: still one each
