"""The project as a container image or a scheduled job installs it: a wheel built from the source, installed
(not editable) into a new virtual environment, and run from an unrelated directory. The schema and the default
configuration must come from the installed package, and every project module that runs must be the installed
copy, not this checkout.

The new environment gets only the wheel (`--no-deps`); the dependencies (TensorFlow, Beam, ...) are reached
through a .pth line naming this venv's site-packages, read after the new environment's own site-packages, so a
full dependency install (minutes) is not repeated on every run. This venv's editable install of the project is
not followed: a .pth line adds a folder, and the .pth files inside that folder are not processed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import tomllib
from support.paths import E2E_CONFIG as CONFIG
from support.paths import PROJECT, SAMPLE_DIR

from library.code_version import step_code_version
from pipeline import dag

# Printed by the installed interpreter: where each module and data file it uses lives, and the steps' code
# versions.
WHERE_FROM = r"""
import importlib, json, sys
from contract.config import ValidateConfig
from contract.config_loading import default_config_file
from pipeline import dag
from library.code_version import project_modules, step_code_version
steps = {step.name: (step.spec.module, step.spec.executor_module) for step in dag.STEPS}
importable = ("apps.cli", "apps.serving.http", "apps.predict", "engines.dask.runner", "schemas", "configs")
files = {name: importlib.import_module(name).__file__ for name in importable}
files.update({name: str(path) for modules in steps.values() for module in modules
              for name, path in project_modules(module).items()})
print(json.dumps({"files": files, "schema": str(ValidateConfig().schema_path()),
                  "config": str(default_config_file()),
                  "versions": {step.name: step_code_version(step) for step in dag.STEPS}}))
"""


def _run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                               env={**env, "CUDA_VISIBLE_DEVICES": "-1"})
    assert completed.returncode == 0, (f"exit {completed.returncode}: {command}\n--- stdout\n"
                                       f"{completed.stdout[-4000:]}\n--- stderr\n{completed.stderr[-4000:]}")
    return completed


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the new venv, an empty working directory, {what: seconds}) after building and installing the wheel."""
    base = tmp_path_factory.mktemp("install")
    seconds, started = {}, time.monotonic()
    # Build from a copy holding what pyproject.toml packages, so the checkout gets no build/ or *.egg-info.
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, source / name)
    patterns = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]
    for package in {pattern.rstrip("*") for pattern in patterns["include"]}:
        shutil.copytree(PROJECT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(base / "dist"), str(source)], cwd=base)
    wheel, = (base / "dist").glob("agnews_pipeline-*.whl")
    seconds["build the wheel"] = time.monotonic() - started

    started = time.monotonic()
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    python = venv / "bin" / "python"
    site_packages = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base
        ).stdout.strip()
    )
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], cwd=base)
    seconds["create the venv and install the wheel"] = time.monotonic() - started
    workdir = base / "elsewhere"
    workdir.mkdir()
    return venv, workdir, seconds


def test_the_installed_wheel_runs_from_another_directory(installed):
    venv, workdir, seconds = installed
    agnews = str(venv / "bin" / "agnews-pipeline")
    root = workdir / "root"
    pipeline = ["--config", str(CONFIG), "--data", f"csv:{SAMPLE_DIR}", "--pipeline-root", str(root)]

    # Every project module, the schema and the default configuration come from the new venv.
    where = json.loads(_run([str(venv / "bin" / "python"), "-c", WHERE_FROM], cwd=workdir).stdout)
    outside = {name: path for name, path in where["files"].items() if not Path(path).is_relative_to(venv)}
    assert outside == {} and len(where["files"]) > 20
    for data, name in ((where["schema"], "ag_news_raw.pbtxt"), (where["config"], "default.yaml")):
        assert Path(data).is_relative_to(venv) and Path(data).name == name and Path(data).is_file()
    # The code versions, derived from the installed sources, equal those of this checkout: same code, same
    # cache.
    assert where["versions"] == {step.name: step_code_version(step) for step in dag.STEPS}

    started = time.monotonic()
    first = _run([agnews, "run", *pipeline, "--until", "transform"], cwd=workdir)
    seconds["run --until transform"] = time.monotonic() - started
    assert "examples: train_rows=1148" in first.stdout and "transform_graph: vocab_size=5000" in first.stdout
    assert f"against {where['schema']}" in first.stdout  # validate read the packaged schema

    runs = _run([agnews, "runs", "--pipeline-root", str(root)], cwd=workdir)
    assert "succeeded" in runs.stdout, runs.stdout
    assert "--pipeline-root" in _run([agnews, "serve", "--help"], cwd=workdir).stdout

    started = time.monotonic()  # a model to predict with: one epoch, no search, the earlier steps cached
    _run(
        [
            agnews,
            "run",
            *pipeline,
            "--from",
            "tuner",
            "--until",
            "trainer",
            "--no-tune",
            "--set",
            "trainer.epochs=1",
            # the product's default (the test config turns it off): the installed trainer exports for XLA
            "--set",
            "trainer.export_xla=true",
        ],
        cwd=workdir,
    )
    seconds["run --from tuner --until trainer"] = time.monotonic() - started
    model, = root.glob("runs/*/trainer/model")
    # The XLA export's warm-up file holds a request per padded shape beside the 3 plain ones (the shapes are
    # compiled when it is replayed: tests/system/test_export.py).
    warmup, = model.rglob("tf_serving_warmup_requests")
    import tensorflow as tf

    shape_requests = sum(1 for _ in tf.data.TFRecordDataset(str(warmup))) - 3
    assert shape_requests > 0 and shape_requests % 4 == 0, shape_requests  # 4 batch sizes per length
    texts = workdir / "texts.txt"
    texts.write_text(
        "Stocks rallied as the Federal Reserve held rates\nThe striker scored twice in the final\n"
    )
    started = time.monotonic()
    predicted = _run([agnews, "predict", "--model-dir", str(model), "--input", str(texts)], cwd=workdir)
    seconds["predict"] = time.monotonic() - started
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(rows) == 2 and all(
        row["class_name"] in ("World", "Sports", "Business", "Sci/Tech") for row in rows
    )
    # nothing written elsewhere
    assert sorted(path.name for path in workdir.iterdir()) == ["root", "texts.txt"]
    print("install test seconds:", json.dumps({name: round(value, 1) for name, value in seconds.items()}))

