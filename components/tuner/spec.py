"""The tuner's spec, and the one place that answers "does this run re-tune?": retune_decision().

Its inputs that are not another step's plain output: `tuned_hyperparameters` is the newest earlier search of
this root with the same search fingerprint (a Resolver), `statistics` is validate's, whose drift verdict
forces a new search. retune_decision() reads them and tuner.enabled and tuner.retune; its reason is part of
the step's cache key (SPEC.decision), because the answer can change with the clock alone.

The search fingerprint, the configuration check and the external fingerprint are the executor's functions:
they read the model registry (library/models.py) or the pretrained vectors (library/embeddings.py), modules
that import Keras or TensorFlow inside their functions, which this module must not reach (pyproject.toml's
import contracts).
"""
from __future__ import annotations

import time
from typing import Any, NamedTuple

from contract.artifacts import Artifact
from contract.component_spec import ComponentSpec
from contract.config import TunerConfig
from contract.names import BEST_HYPERPARAMETERS
from contract.units import format_duration

TUNED_INPUT = "tuned_hyperparameters"  # the newest earlier search of this root with the same search fingerprint
DRIFT_INPUT = "statistics"  # validate's statistics; its drift_detected property forces a search
DRIFT_PROPERTY = "drift_detected"


def search_fingerprint(config: TunerConfig) -> str:
    """What a search explores and how (the executor's search_fingerprint): hyperparameters are only reused by
    a run whose search fingerprint is theirs. Imports the executor, which loads no Keras for it."""
    return SPEC.executor_function("search_fingerprint")(config)


class Decision(NamedTuple):
    search: bool
    reason: str  # a stable word, part of the cache key: first, drift, always, every, disabled, reuse
    detail: str  # the sentence the tuner's output line, the report and `show` give


def retune_decision(inputs: dict[str, Artifact], config: TunerConfig, now: float | None = None) -> Decision:
    """Whether this run searches or reuses the newest earlier search (inputs[TUNED_INPUT]): tuner.retune."""
    if not config.enabled:
        return Decision(False, "disabled", "search disabled (--no-tune): the architecture's defaults")
    policy = config.retune_policy()
    previous = inputs.get(TUNED_INPUT)
    if previous is not None and previous.properties.get("search_fingerprint") != search_fingerprint(config):
        previous = None  # not found by the store's matching (a hand-made store): never reuse another search
    if policy.kind == "always":
        return Decision(True, "always", "searching: tuner.retune is always")
    if previous is None:
        return Decision(True, "first", "searching: no earlier search in this root for this architecture and "
                                       "search space")
    statistics = inputs.get(DRIFT_INPUT)
    if statistics is not None and statistics.properties.get(DRIFT_PROPERTY):
        return Decision(True, "drift", "searching: the validate step detected drift")
    since = int(previous.properties.get("runs_since_search", 0)) + 1
    age = (time.time() if now is None else now) - float(previous.properties.get("tuned_at", 0))
    origin = f"tuned in run {previous.properties.get('tuned_from')}"
    ago = format_duration(age) if age < 86400 else f"{age / 86400:.1f} days"
    if policy.kind == "retrains" and since >= policy.every:
        return Decision(True, "every", f"searching: tuner.retune is {config.retune} and the hyperparameters "
                                       f"{origin} were reused by {since - 1} run(s)")
    if policy.kind == "seconds" and age >= policy.every:
        return Decision(True, "every", f"searching: tuner.retune is {config.retune} and the hyperparameters "
                                       f"{origin} are {ago} old")
    why = "no drift" if statistics is not None else "no drift verdict"
    return Decision(False, "reuse", f"reusing the hyperparameters {origin} ({ago} ago, {since - 1} reuse(s) "
                                    f"before; {why}; tuner.retune {config.retune})")


def decision_facts(inputs: dict[str, Artifact], config: TunerConfig) -> dict[str, Any]:
    """The part of the decision that goes into the step's cache key (SPEC.decision)."""
    decision = retune_decision(inputs, config)
    return {"search": decision.search, "reason": decision.reason}


SPEC = ComponentSpec(__name__, executor="components.tuner.executor", outputs=(BEST_HYPERPARAMETERS,),
                     config_section="tuner", seeded=True, resumable=True, reports_progress=True,
                     external="external_fingerprint", check_config="check_config", decision=decision_facts)
