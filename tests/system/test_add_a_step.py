"""Adding a step takes what docs/development.md says: a package components/<step>/ (spec.py + executor.py),
the import of its spec and one Step line in pipeline/dag.py, and its configuration section (a dataclass and a
field in contract/config.py). Proven on a copy of the product packages: a `count` step after ingest, run
through the real `agnews-pipeline run --until count` on the committed sample."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.paths import E2E_CONFIG, SAMPLE_DIR

from library.code_version import PROJECT_PACKAGES, PROJECT_ROOT

COUNT_SPEC = '''"""The count step's spec: it reads ingest's examples and writes how many rows they hold."""
from contract.component_spec import ComponentSpec

SPEC = ComponentSpec(__name__, executor="components.count.executor", outputs=("row_count",),
                     config_section="count")
'''
COUNT_EXECUTOR = '''"""The count step's executor: the rows ingest wrote, in a file named by its
configuration."""
from pathlib import Path

from contract.artifacts import Artifact
from contract.names import EXAMPLES


def run(inputs, output_dir: Path, config, runtime):
    properties = inputs[EXAMPLES].properties
    rows = sum(properties[f"{split}_rows"] for split in ("train", "eval", "test"))
    out = Path(output_dir) / "row_count"
    out.mkdir()
    (out / f"{config.label}.txt").write_text(f"{rows}\\n")
    return {"row_count": Artifact("row_count", out, {"rows": rows})}
'''
COUNT_CONFIG = '''@dataclass(frozen=True)
class CountConfig:
    label: str = "rows"


'''


def _edit(path: Path, anchor: str, text: str, before: bool = False) -> None:
    """Inserts `text` after (or before) the one line of `path` that contains `anchor`."""
    source = path.read_text(encoding="utf-8")
    start = source.index(anchor)
    assert source.count(anchor) == 1, anchor
    at = source.rindex("\n", 0, start) + 1 if before else source.index("\n", start) + 1
    path.write_text(source[:at] + text + source[at:], encoding="utf-8")


def _copy_with_a_count_step(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    for package in (*PROJECT_PACKAGES, "configs", "schemas"):
        shutil.copytree(PROJECT_ROOT / package, project / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    step = project / "components" / "count"  # 1. the package
    step.mkdir()
    (step / "__init__.py").write_text("")
    (step / "spec.py").write_text(COUNT_SPEC)
    (step / "executor.py").write_text(COUNT_EXECUTOR)
    dag = project / "pipeline" / "dag.py"  # 2. the DAG: the spec's import and one Step line
    _edit(dag, "from components.evaluator import spec as evaluator_spec",
          "from components.count import spec as count_spec\n", before=True)
    _edit(dag, 'Step("ingest", ingest_spec.SPEC',
          '    Step("count", count_spec.SPEC, inputs={EXAMPLES: "ingest.examples"}),\n')
    config = project / "contract" / "config.py"  # 3. the configuration section
    _edit(config, "@dataclass(frozen=True)\nclass Config:", COUNT_CONFIG, before=True)
    _edit(config, "pusher: PusherConfig = field(",
          "    count: CountConfig = field(default_factory=CountConfig)\n")
    return project


def test_a_new_step_is_a_package_one_dag_line_and_a_config_section(tmp_path):
    project = _copy_with_a_count_step(tmp_path)
    root = tmp_path / "root"
    env = {**os.environ, "PYTHONPATH": str(project), "CUDA_VISIBLE_DEVICES": "-1"}
    completed = subprocess.run(
        [sys.executable, "-m", "apps.cli", "run", "--config", str(E2E_CONFIG),
         "--data", f"csv:{SAMPLE_DIR}", "--pipeline-root", str(root), "--until", "count", "--set",
         "count.label=examples"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    written = list((root / "runs").glob("*/count/row_count/examples.txt"))
    assert len(written) == 1, completed.stdout[-3000:]
    lines = sum(len(path.read_bytes().splitlines()) for path in SAMPLE_DIR.glob("*.csv"))
    assert written[0].read_text() == f"{lines}\n"  # every row of the sample was ingested, then counted
    assert "[3/8] validate   skipped (--until count)" in completed.stdout
