"""The contract between the runner and the components.

A component is a module with one entry point:

    def run(inputs: dict[str, Artifact], output_dir: Path, config: <Its>Config, runtime: Runtime)
            -> dict[str, Artifact]

It reads only `inputs`, writes only under `output_dir` (a temporary folder the runner publishes by rename
after success), and returns one Artifact per declared output, each a folder under `output_dir`. It knows
nothing of runs, caching or the metadata store; it raises ComponentError with a readable message on failure.

A step is a package components/<step>/: its spec.py declares it (a ComponentSpec, contract/component_spec.py)
and names this module, its executor, by module path; pipeline/dag.py imports the specs only and the runner
imports an executor when its step runs or when a hook the spec names in it is called (external fingerprints,
before any work). A fully cached run imports the executors, so they import TensorFlow, Keras, TFT, TFMA and
Beam (and the library modules that import them at their top) inside `run()` or the helper that needs them; a
class that subclasses one of their types is defined inside a function. The step's code version is derived from
every project module its module imports, wherever the import statement is (library/code_version.py), so lazy
imports count.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from contract.files import update_digest


class ComponentError(RuntimeError):
    """A component failed for a reason the user can act on; the message is shown without a traceback. `kind`
    names a failure that the CLI gives an exit code of its own (e.g. "drift"); None for any other. `details`:
    plain JSON-able facts the pipeline records (validate: the spans it refused, {"refused": [...]}). `facts`
    are what the component measured before refusing, as {output name: properties} of the outputs it would have
    published (validate's drift values on exit 8): the runner keeps them in the run record, so a refused run's
    metrics, report and history still show them."""

    def __init__(self, message: str = "", kind: str | None = None, details: dict | None = None,
                 facts: dict[str, dict[str, Any]] | None = None):
        super().__init__(message)
        self.kind = kind
        self.details = details
        self.facts = facts or {}


# What a step says when a Beam runner returned a different number of rows than went in (nothing is published).
LOST_ROWS_ADVICE = ("nothing was published. Run it again; if it repeats, run with the default DirectRunner "
                    "(in_memory) and report the runner and its flags")


def check_rows_arrived(step: str, counted: dict[str, int], examples: "Artifact") -> None:
    """Each split's rows a step counted in its Beam output against the examples artifact's `<split>_rows`
    (ingest's count): a runner that loses or repeats elements fails the step here, before anything is
    published. A split the artifact gives no count for is not checked."""
    wrong = [(split, counted[split], examples.properties[f"{split}_rows"]) for split in counted
             if examples.properties.get(f"{split}_rows") is not None
             and counted[split] != examples.properties[f"{split}_rows"]]
    if wrong:
        found = ", ".join(f"{got:,} {split} rows of the {want:,}" for split, got, want in wrong)
        raise ComponentError(f"{step}: the Beam runner returned {found} in the examples artifact "
                             f"{examples.uri}; {LOST_ROWS_ADVICE}")


@dataclass(frozen=True)
class Artifact:
    # what it is: "examples", "transform_graph", "model", "blessing", ...
    name: str
    # a folder
    uri: Path
    # small JSON-able facts: row counts, metrics, ...
    properties: dict[str, Any] = field(default_factory=dict)

    def relocated(self, old_root: Path, new_root: Path) -> "Artifact":
        """The same artifact after its component's folder was renamed from old_root to new_root."""
        return replace(self, uri=new_root / Path(self.uri).relative_to(old_root))


@dataclass(frozen=True)
class Runtime:
    """Execution facts that do not change a component's result (so they are not part of its cache key)."""
    beam_args: tuple[str, ...] = ()
    seed: int = 42
    log: Callable[[str], None] = print
    # where a multi-worker training job is written for the other workers
    pipeline_root: Path | None = None
    # the run executing the step (the tuner names the run whose search a later run reuses)
    run_id: str = ""
    # True once a stop (SIGINT, SIGTERM, the deadline) was recorded: a component that publishes outside its
    # output_dir (the pusher's rename into the serving folder) asks right before, in case the stop's exception
    # was swallowed or lost on its way.
    stop_requested: Callable[[], bool] = lambda: False


def fingerprint(path: Path) -> str:
    """SHA-256 over every file below `path` (relative name and content), in a stable order."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        digest.update(b"\0")
        with open(file, "rb") as handle:
            update_digest(digest, handle)
        digest.update(b"\0")
    return digest.hexdigest()
