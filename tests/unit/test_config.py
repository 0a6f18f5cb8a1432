"""Configuration: defaults, file, overrides, flags, and clear errors for unknown keys and bad values."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from apps.cli.parser import build_parser, config_from_args
from contract.config import Config, PusherConfig
from contract.config_checks import ConfigError
from contract.config_loading import default_config_file, load_config
from contract.data_config import ValidateConfig
from pipeline.runner import check_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_default_yaml_matches_the_dataclass_defaults():
    loaded = load_config(default_config_file())
    assert dataclasses.replace(loaded, pusher=PusherConfig()) == Config()  # the serving folder is resolved


def test_the_packaged_schema_is_the_default_and_a_relative_schema_is_taken_from_the_working_directory(
        tmp_path, monkeypatch):
    packaged = ValidateConfig().schema_path()
    # this checkout's file (tests/system/test_install.py:
    assert packaged == PROJECT_ROOT / "schemas" / "ag_news_raw.pbtxt"
    assert packaged.is_file()                                          # the installed wheel's)
    monkeypatch.chdir(tmp_path)
    assert (
        load_config(overrides=["validate.schema=mine.pbtxt"]).validate.schema_path()
        == tmp_path / "mine.pbtxt"
    )


def test_serving_folder_is_resolved_when_the_configuration_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config().pusher.serving_dir == str(tmp_path / "pipeline_root" / "serving" / "agnews")
    assert load_config(flags={"pipeline.root": "elsewhere"}).pusher.serving_dir == str(
        tmp_path / "elsewhere" / "serving" / "agnews")
    assert load_config(flags={"pusher.serving_dir": "models"}).pusher.serving_dir == str(tmp_path / "models")


def test_precedence_file_then_set_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"transform": {"vocab_size": 100, "max_length": 32},
                                    "tuner": {"architecture": "lstm"}}))
    args = build_parser().parse_args(["run", "--config", str(path), "--set", "transform.vocab_size=200",
                                      "--model", "rnn", "--no-tune", "--beam-arg=--direct_num_workers=2",
                                      "--data", "csv:/x"])
    config = config_from_args(args)
    assert config.transform.vocab_size == 200 and config.transform.max_length == 32
    assert config.tuner.architecture == "rnn" and config.tuner.enabled is False
    assert config.pipeline.beam_args == ("--direct_num_workers=2",)
    assert config.ingest.data == "csv:/x"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["transform.vocab_sise=10"], "unknown key transform.vocab_sise"),
        (["trainers.epochs=1"], "unknown configuration section"),
        (["trainer.epochs=ten"], "trainer.epochs must be an integer"),
        (["trainer.epochs=0"], "trainer.epochs must be >= 1"),
        (["trainer.warm_start_patience=-1"], "trainer.warm_start_patience must be >= 0"),
        (
            ["trainer.max_rows_per_epoch=-5"],
            r"trainer.max_rows_per_epoch must be >= 0 \(0 = the whole split\), got -5",
        ),
        (["ingest.data=s3://bucket"], "ingest.data must be 'tfds' or 'csv:DIR'"),
        (["tuner.architecture=cnn"], "must be one of"),
        (["transform.bucket_boundaries=[16, 8]"], "strictly increasing"),
        (["tuner.enabled=yes please"], "must be true or false"),
        (["noequals"], "--set expects section.key=value"),
        (
            ["trainer.strategy=multi_worker_mirrored"],
            "multi_worker_mirrored needs trainer.workers, HOST:PORT of every",
        ),
        (
            ["trainer.workers=[127.0.0.1:2345]"],
            "trainer.workers is only used with trainer.strategy=multi_worker",
        ),
        (
            ["trainer.strategy=multi_worker_mirrored", "trainer.workers=[127.0.0.1]"],
            "'127.0.0.1' is not HOST:PORT",
        ),
        (
            ["trainer.strategy=multi_worker_mirrored", "trainer.workers=[h:1, h:70000]"],
            "'h:70000' is not HOST:PORT",
        ),
        (["trainer.strategy=multi_worker_mirrored", "trainer.workers=[h:1, h:1]"], "lists a worker twice"),
        (
            ["trainer.strategy=multi_worker_mirrored", "trainer.workers=[h:1]", "trainer.worker_timeout=0"],
            "trainer.worker_timeout must be > 0",
        ),
    ],
)
def test_bad_values_fail_before_any_work(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(load_config(None, overrides))  # the schema's checks, then the libraries' (the registry)


def test_multi_worker_configuration_keeps_the_worker_order():
    config = load_config(
        None,
        [
            "trainer.strategy=multi_worker_mirrored",
            "trainer.workers=[10.0.0.2:23456, 10.0.0.1:23456]",
            "trainer.worker_timeout=30",
        ],
    )
    assert config.trainer.workers == ("10.0.0.2:23456", "10.0.0.1:23456")  # index 0, the chief, first
    assert config.trainer.worker_timeout == 30.0


def test_cli_reports_config_errors_with_exit_code_2(capsys):
    from apps.cli.exit_codes import EXIT_USAGE
    from apps.cli.main import main
    assert main(["run", "--set", "transform.vocab_size=-1"]) == EXIT_USAGE
    assert "vocab_size must be >= 1" in capsys.readouterr().err


def test_bucket_upper_bounds_end_at_max_length():
    from contract.data_config import TransformConfig
    assert TransformConfig(max_length=50, bucket_boundaries=(8, 16, 64)).bucket_upper_bounds() == [8, 16, 50]
    assert TransformConfig().bucket_upper_bounds()[-1] == 256


def test_architecture_choices_come_from_the_model_registry(capsys):
    from apps.cli.main import main
    from library.models import ARCHITECTURES
    for name in ARCHITECTURES:
        args = build_parser().parse_args(["run", "--model", name])
        assert config_from_args(args).tuner.architecture == name
        assert load_config(None, [f"tuner.architecture={name}"]).tuner.architecture == name
    known = ", ".join(ARCHITECTURES)
    with pytest.raises(ConfigError, match=f"must be one of {known}, got 'cnn'"):
        check_config(load_config(None, ["tuner.architecture=cnn"]))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--model", "cnn"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'cnn'" in capsys.readouterr().err


def test_config_and_cli_parser_load_no_keras_or_tensorflow():
    # Config validation and the parser ask the registry for names; that must stay cheap (no TensorFlow
    # import).
    script = (
        "import sys; from apps.cli.parser import build_parser, config_from_args; "
        "from library import models; "
        "config_from_args(build_parser().parse_args(['run', '--model', 'lstm'])); "
        "models.default_hyperparameters('bilstm'); models.parse_fixed_hyperparameters('lstm', ['units=8']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('keras', 'keras_tuner', 'tensorflow', 'tensorflow_transform', 'apache_beam')))"
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                             cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.strip() == "[]"
