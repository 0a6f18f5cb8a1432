"""A step's code version is derived from the project modules its component imports (read with ast, never
imported), and the commands that do no ML work never import TensorFlow, TFT or Beam."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from support import toy_components

from contract.config_loading import load_config
from library.code_version import PROJECT_PACKAGES, PROJECT_ROOT, project_modules, step_code_version
from pipeline import dag
from pipeline.runner import Runner

HEAVY = ("tensorflow", "tensorflow_transform", "apache_beam", "keras", "tensorflow_model_analysis")


def _copy_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for package in PROJECT_PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _versions(root: Path) -> dict[str, str]:
    return {step.name: step_code_version(step, root) for step in dag.STEPS}


def test_editing_a_library_module_changes_the_code_version_of_the_steps_that_import_it_only(tmp_path):
    root = _copy_project(tmp_path)
    before = _versions(root)
    assert before == _versions(PROJECT_ROOT)  # a copy of the same sources has the same versions
    assert len(set(before.values())) == len(dag.STEPS)
    with open(root / "library" / "ag_news_csv.py", "a", encoding="utf-8") as handle:
        handle.write("\n# an edit of the CSV grammar, which only ingest imports\n")
    after = _versions(root)
    assert {name for name in before if after[name] != before[name]} == {"ingest"}
    with open(root / "contract" / "artifacts.py", "a", encoding="utf-8") as handle:
        handle.write("\n# the component contract: every step depends on it\n")
    assert all(version != after[name] for name, version in _versions(root).items())


def test_a_step_version_covers_its_spec_and_its_executor(tmp_path):
    """The evaluator's executor does not import its spec, yet an edit of either re-runs the evaluator only."""
    root = _copy_project(tmp_path)
    before = _versions(root)
    for module in ("spec.py", "executor.py"):
        with open(root / "components" / "evaluator" / module, "a", encoding="utf-8") as handle:
            handle.write(f"\n# an edit of the evaluator's {module}\n")
        after = _versions(root)
        assert {name for name in before if after[name] != before[name]} == {"evaluator"}, module
        before = after


def test_importing_the_dag_imports_specs_only_and_no_tensorflow():
    """pipeline.dag (and its display tables) import the seven specs, never an executor, so no TensorFlow."""
    script = ("import json, sys\nimport pipeline.dag, pipeline.headlines\n"
              "prefixes = ('components.', *sys.argv[1:])\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith(prefixes))))")
    completed = subprocess.run([sys.executable, "-c", script, *HEAVY], cwd=PROJECT_ROOT, capture_output=True,
                               text=True, timeout=300)
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    steps = [step.name for step in dag.STEPS]
    specs = sorted(f"components.{step}.spec" for step in steps)
    assert [name for name in loaded if name.endswith(".spec")] == specs
    assert [name for name in loaded if not name.endswith(".spec") and name.count(".") > 1] == []
    assert not set(loaded) & set(HEAVY)


def test_imports_inside_functions_count_and_third_party_modules_do_not():
    tuner = project_modules("components.tuner.executor")
    assert "library.dataset" in tuner  # imported inside run(): still part of the tuner's code
    assert "contract.artifacts" in tuner and "components.tuner.executor" in tuner
    assert "components.tuner.spec" in tuner  # the step's spec is part of its code: the executor imports it
    assert all(name.split(".")[0] in PROJECT_PACKAGES for name in tuner)
    assert "library.export" in project_modules("components.trainer.executor")
    assert "library.ag_news_csv" not in project_modules("components.pusher.executor")


def test_a_toy_component_outside_the_project_packages_has_its_own_file_in_its_version():
    modules = project_modules(toy_components.SOURCE.executor_module)
    assert modules["support.toy_components"] == Path(toy_components.__file__)
    assert "contract.artifacts" in modules


def _imported_by(argv: list[str]) -> dict:
    """Runs the CLI in a fresh process; returns its exit status and which heavy modules it imported."""
    script = ("import json, sys\nfrom apps.cli.main import main\nstatus = main(sys.argv[1:])\n"
              f"heavy = sorted(m for m in {list(HEAVY)!r} if m in sys.modules)\n"
              "print(json.dumps({'status': status, 'heavy': heavy}))")
    completed = subprocess.run([sys.executable, "-c", script, *argv], cwd=PROJECT_ROOT, capture_output=True,
                               text=True, timeout=300)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_runs_show_and_gc_import_no_tensorflow_tft_or_beam(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("1 2 3\n")
    root = tmp_path / "root"
    runner = Runner(load_config(flags={"pipeline.root": str(root), "ingest.data": f"csv:{data}"}),
                    log=lambda message: None, steps=toy_components.STEPS)
    try:
        assert runner.run().status == "succeeded"
    finally:
        runner.close()
    for argv in (["runs", "--pipeline-root", str(root)], ["show", "--pipeline-root", str(root)],
                 ["gc", "--keep", "1", "--dry-run", "--pipeline-root", str(root)]):
        assert _imported_by(argv) == {"status": 0, "heavy": []}, argv


def test_an_edit_of_the_model_registry_re_runs_tuner_and_trainer_only_and_the_engines_none(tmp_path):
    """The configuration schema imports no library (contract/config.py), so the architectures are code of the
    steps that build models only; a Beam engine is a runtime choice, part of no step's code."""
    root = _copy_project(tmp_path)
    before = _versions(root)
    with open(root / "library" / "models.py", "a", encoding="utf-8") as handle:
        handle.write("\n# a new architecture\n")
    after = _versions(root)
    assert {name for name in before if after[name] != before[name]} == {"tuner", "trainer"}
    with open(root / "engines" / "dask" / "runner.py", "a", encoding="utf-8") as handle:
        handle.write("\n# an edit of the dask adapter\n")
    assert _versions(root) == after
    with open(root / "apps" / "serving" / "http.py", "a", encoding="utf-8") as handle:
        handle.write("\n# an edit of the model server\n")
    assert _versions(root) == after
