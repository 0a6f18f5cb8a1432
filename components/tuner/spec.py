"""The tuner's spec, and the one place that answers "does this run re-tune?": retune_decision().

Its inputs that are not another step's plain output: `tuned_hyperparameters` is the newest earlier search of
this root with the same search fingerprint (a Resolver), `statistics` is validate's, whose drift verdict
forces a new search, `served_model` the model serving now (a Resolver). retune_decision() reads them and
tuner.enabled and tuner.retune; its reason is part of the step's cache key (SPEC.decision), because the answer
can change with the clock alone.

One search per drift episode: a search that answered a drift verdict records the episode (`drift_episode`: the
drifted spans and their label mix); every later search or reuse carries it on. Once the model trained with
those hyperparameters is the one served, a later drift verdict (the window still holding the spans from before
the shift, a lasting shift is flagged week after week) forces no search when it is a label-mix drift whose
spans' label mix is within validate.drift.label_linf of the episode's: the served model was tuned on that
shift already (prediction_linf, the served model's predicted-class mix, follows the label mix and counts as
one). A drift of another measure, or of the label mix away from the episode's, searches again.

The search fingerprint, the configuration check and the external fingerprint are the executor's functions:
they read the model registry (library/models.py) or the pretrained vectors (library/embeddings.py), modules
that import Keras or TensorFlow inside their functions, which this module must not reach (pyproject.toml's
import contracts).
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, NamedTuple

from contract.artifacts import Artifact
from contract.component_spec import ComponentSpec
from contract.config import TunerConfig
from contract.names import BEST_HYPERPARAMETERS, EXAMPLES
from contract.units import format_duration
from library import drift
from library.layouts import read_counts

# the newest earlier search of this root with the same search fingerprint
TUNED_INPUT = "tuned_hyperparameters"
# validate's statistics; its drift_detected property forces a search
DRIFT_INPUT = "statistics"
DRIFT_PROPERTY = "drift_detected"
# the model serving now: was it trained with the search that answered a drift?
SERVED_INPUT = "served_model"
# The drift of a label mix: the labels', and the served model's predictions', which follow it (label-free).
LABEL_MIX_MEASURES = ("label_linf", "prediction_linf")
# {"spans", "label_shares", "answered_in", "searches"} of the drift a search answered
EPISODE_PROPERTY = "drift_episode"
# Searches one drift episode may run even when none of their models gets served (the issue: at most 2).
MAX_EPISODE_SEARCHES = 2


def search_fingerprint(config: TunerConfig) -> str:
    """What a search explores and how (the executor's search_fingerprint): hyperparameters are only reused by
    a run whose search fingerprint is theirs. Imports the executor, which loads no Keras for it."""
    return SPEC.executor_function("search_fingerprint")(config)


class Decision(NamedTuple):
    search: bool
    # a stable word, part of the cache key: first, drift, always, every, disabled, reuse
    reason: str
    # the sentence the tuner's output line, the report and `show` give
    detail: str


def retune_decision(inputs: dict[str, Artifact], config: TunerConfig, now: float | None = None) -> Decision:
    """Whether this run searches or reuses the newest earlier search (inputs[TUNED_INPUT]): tuner.retune."""
    if not config.enabled:
        return Decision(False, "disabled", "search disabled (--no-tune): the architecture's defaults")
    policy = config.retune_policy()
    previous = inputs.get(TUNED_INPUT)
    if previous is not None and previous.properties.get("search_fingerprint") != search_fingerprint(config):
        # not found by the store's matching (a hand-made store): never reuse another search
        previous = None
    if policy.kind == "always":
        return Decision(True, "always", "searching: tuner.retune is always")
    if previous is None:
        return Decision(True, "first", "searching: no earlier search in this root for this architecture and "
                                       "search space")
    statistics = inputs.get(DRIFT_INPUT)
    answered = None
    if statistics is not None and statistics.properties.get(DRIFT_PROPERTY):
        answered = _answered(inputs, previous, statistics)
        if answered is None:
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
    why = answered or ("no drift" if statistics is not None else "no drift verdict")
    return Decision(False, "reuse", f"reusing the hyperparameters {origin} ({ago} ago, {since - 1} reuse(s) "
                                    f"before; {why}; tuner.retune {config.retune})")


def _label_shares(examples: Artifact | None, spans: list[str]) -> dict[str, float] | None:
    """The label mix ({label: share}) of these spans' rows (train and eval, as validate measures drift), from
    the examples' counts; None when a span is not in them."""
    if examples is None or not spans:
        return None
    per_span = read_counts(examples.uri).get("spans", {})
    if not all(span in per_span for span in spans):
        return None
    totals: dict[str, int] = {}
    for span in spans:
        for split in ("train", "eval"):
            for label, count in per_span[span]["label_counts"][split].items():
                totals[label] = totals.get(label, 0) + count
    rows = sum(totals.values())
    return {label: count / rows for label, count in sorted(totals.items())} if rows else None


def _drifted_spans(statistics: Artifact) -> list[str]:
    """The spans the drift verdict is about (every drifted new span, or the newest span)."""
    spans = statistics.properties.get("drifted_spans")
    return list(spans) if spans else [statistics.properties.get("drift_span")]


def episode(inputs: dict[str, Artifact], decision: Decision, run_id: str) -> dict[str, Any] | None:
    """The drift episode a search or reuse records: a new one when it answers a drift verdict, else the one
    the reused search carried (None: no episode)."""
    statistics = inputs.get(DRIFT_INPUT)
    if decision.reason == "drift" and statistics is not None:
        spans = _drifted_spans(statistics)
        shares = _label_shares(inputs.get(EXAMPLES), spans)
        if not shares:
            return None
        previous = inputs.get(TUNED_INPUT)
        recorded = previous.properties.get(EPISODE_PROPERTY) if previous is not None else None
        # a search for the same label mix is one more search of the same episode
        same = recorded and _mix_distance(shares, recorded, statistics) is not None
        searches = int(recorded.get("searches", 1)) + 1 if same else 1
        return {"spans": spans, "label_shares": shares, "answered_in": run_id, "searches": searches}
    previous = inputs.get(TUNED_INPUT)
    if previous is None or decision.reason in ("first", "disabled"):
        # no earlier search of this search space to carry an episode from
        return None
    return previous.properties.get(EPISODE_PROPERTY)


def _mix_distance(
    shares: dict[str, float], recorded: dict, statistics: Artifact
) -> tuple[float, float] | None:
    """(L-inf distance, threshold) of a label mix from the episode's when within validate's label_linf
    threshold, else None."""
    checks = statistics.properties.get("drift_checks") or []
    drifted = [row for row in checks if row.get("drift")]
    threshold = next((row["threshold"] for row in checks if row["measure"] == "label_linf"),
                     drifted[0]["threshold"] if drifted else 0.0)
    distance = drift.l_infinity(Counter(shares), Counter(recorded["label_shares"]))
    return (distance, threshold) if distance <= threshold else None


def _answered(inputs: dict[str, Artifact], previous: Artifact, statistics: Artifact) -> str | None:
    """Why this drift verdict needs no search (a drift episode already answered by the search whose model is
    served, or searched MAX_EPISODE_SEARCHES times already), or None."""
    recorded = previous.properties.get(EPISODE_PROPERTY)
    served = inputs.get(SERVED_INPUT)
    is_served = served is not None and served.properties.get("tuned_from") == previous.properties.get(
        "tuned_from")
    exhausted = bool(recorded) and int(recorded.get("searches", 1)) >= MAX_EPISODE_SEARCHES
    if not recorded or not (is_served or exhausted):
        # no episode, or the model of its search is not the one served and the episode may search again
        return None
    checks = statistics.properties.get("drift_checks") or []
    drifted = [row for row in checks if row.get("drift")]
    if not drifted or any(row["measure"] not in LABEL_MIX_MEASURES for row in drifted):
        # only a label-mix drift can be compared with the episode's label mix
        return None
    spans = _drifted_spans(statistics)
    shares = _label_shares(inputs.get(EXAMPLES), spans)
    within = _mix_distance(shares, recorded, statistics) if shares is not None else None
    if within is None:
        return None
    distance, threshold = within
    why = "whose model is served" if is_served else f"searched {recorded.get('searches')} times already"
    return (
        f"the drift of span(s) {', '.join(spans)} was answered by the search of run "
        f"{recorded['answered_in']} "
        f"for span(s) {', '.join(recorded['spans'])}, {why}: their label mix is within "
        f"{threshold} of it (L-inf {distance:.3f})"
    )


def decision_facts(inputs: dict[str, Artifact], config: TunerConfig) -> dict[str, Any]:
    """The part of the decision that goes into the step's cache key (SPEC.decision)."""
    decision = retune_decision(inputs, config)
    return {"search": decision.search, "reason": decision.reason}


SPEC = ComponentSpec(__name__, executor="components.tuner.executor", outputs=(BEST_HYPERPARAMETERS,),
                     config_section="tuner", seeded=True, resumable=True, reports_progress=True,
                     external="external_fingerprint", check_config="check_config", decision=decision_facts)
