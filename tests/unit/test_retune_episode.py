"""One search per drift episode, decided in one place (components/tuner/spec.py retune_decision): a drift
verdict searches, unless the search that answered the episode's drift has its model served and the drifted
spans' label mix is the episode's. Inputs are artifacts as the store hands them over, the examples'
counts.json on disk."""
from __future__ import annotations

from pathlib import Path

from components.tuner import spec as tuner
from contract.artifacts import Artifact
from contract.config import TunerConfig
from contract.files import write_json_atomic
from contract.names import EXAMPLES

CONFIG = TunerConfig(retune="every 30d")
NORMAL, SHIFTED, FURTHER = (25, 25, 25, 25), (10, 70, 10, 10), (5, 40, 5, 50)


def _examples(folder: Path, spans: dict[str, tuple[int, ...]]) -> Artifact:
    """An examples artifact whose counts.json holds each span's label counts (all in the train split)."""
    folder.mkdir()
    write_json_atomic(folder / "counts.json", {"window": list(spans), "spans": {
        name: {"label_counts": {"train": {str(i): n for i, n in enumerate(counts)}, "eval": {}}}
        for name, counts in spans.items()}})
    return Artifact("examples", folder, {})


def _statistics(span: str, measures: tuple[str, ...] = ("label_linf",)) -> Artifact:
    checks = [{"measure": name, "value": 0.5, "threshold": 0.1, "drift": name in measures}
              for name in ("label_linf", "length_js", "oov_share")]
    return Artifact(
        "statistics", Path("."), {"drift_detected": True, "drift_checks": checks, "drift_span": span}
    )


def _inputs(examples: Artifact, statistics: Artifact, previous: dict, served_from: str | None) -> dict:
    tuned = Artifact(
        "best_hyperparameters",
        Path("."),
        {
            "search_fingerprint": tuner.search_fingerprint(CONFIG),
            "tuned_from": "r2",
            "tuned_at": 1e12,
            **previous,
        },
    )
    inputs = {tuner.TUNED_INPUT: tuned, tuner.DRIFT_INPUT: statistics, EXAMPLES: examples}
    if served_from is not None:
        inputs[tuner.SERVED_INPUT] = Artifact("model", Path("."), {"tuned_from": served_from})
    return inputs


def test_a_search_answering_drift_records_the_episode_and_later_drift_of_the_same_mix_reuses_it(tmp_path):
    examples = _examples(tmp_path / "e", {"1": NORMAL, "2": NORMAL, "3": SHIFTED, "4": SHIFTED, "5": FURTHER})
    first = tuner.retune_decision(_inputs(examples, _statistics("3"), {}, "r1"), CONFIG, now=1e12)
    assert first.search and first.reason == "drift"
    recorded = tuner.episode(_inputs(examples, _statistics("3"), {}, "r1"), first, "r2")
    assert recorded == {"spans": ["3"], "label_shares": {"0": 0.1, "1": 0.7, "2": 0.1, "3": 0.1},
                        "answered_in": "r2", "searches": 1}
    answered = {tuner.EPISODE_PROPERTY: recorded}
    later = tuner.retune_decision(_inputs(examples, _statistics("4"), answered, "r2"), CONFIG, now=1e12)
    assert not later.search and later.reason == "reuse"
    assert "the drift of span(s) 4 was answered by the search of run r2 for span(s) 3" in later.detail
    # A reuse carries the episode on.
    assert tuner.episode(_inputs(examples, _statistics("4"), answered, "r2"), later, "r3") == recorded


def test_drift_searches_again_when_the_episodes_model_is_not_served_or_the_drift_is_another(tmp_path):
    examples = _examples(tmp_path / "e", {"1": NORMAL, "3": SHIFTED, "4": SHIFTED, "5": FURTHER})
    answered = {
        tuner.EPISODE_PROPERTY: {
            "spans": ["3"],
            "label_shares": {"0": 0.1, "1": 0.7, "2": 0.1, "3": 0.1},
            "answered_in": "r2",
        }
    }
    cases = {
        "not served": _inputs(examples, _statistics("4"), answered, "r1"),
        "none served": _inputs(examples, _statistics("4"), answered, None),
        "label mix moved on": _inputs(examples, _statistics("5"), answered, "r2"),
        "another measure": _inputs(examples, _statistics("4", ("label_linf", "length_js")), answered, "r2"),
        "no episode": _inputs(examples, _statistics("4"), {}, "r2"),
    }
    for case, inputs in cases.items():
        decision = tuner.retune_decision(inputs, CONFIG, now=1e12)
        assert decision.search and decision.reason == "drift", case


def test_an_episode_whose_models_are_never_served_searches_at_most_twice(tmp_path):
    """The second search of the same label mix counts 2; a third drift verdict of that mix reuses it even
    though no model of the episode is served (the issue: at most 2 searches for an episode)."""
    spans = {"1": NORMAL, "3": SHIFTED, "4": SHIFTED, "5": SHIFTED, "6": FURTHER}
    examples = _examples(tmp_path / "e", spans)
    first = {"spans": ["3"], "label_shares": {"0": 0.1, "1": 0.7, "2": 0.1, "3": 0.1}, "answered_in": "r2"}
    second_inputs = _inputs(examples, _statistics("4"), {tuner.EPISODE_PROPERTY: first}, "r1")
    second = tuner.retune_decision(second_inputs, CONFIG, now=1e12)
    assert second.search and second.reason == "drift"
    recorded = tuner.episode(second_inputs, second, "r3")
    assert recorded["searches"] == 2 and recorded["answered_in"] == "r3"
    third_inputs = _inputs(examples, _statistics("5"), {tuner.EPISODE_PROPERTY: recorded}, "r1")
    third = tuner.retune_decision(third_inputs, CONFIG, now=1e12)
    assert not third.search and third.reason == "reuse"
    assert "searched 2 times already" in third.detail
    # A drift to another label mix starts a new episode: it searches, and counts 1 again.
    other_inputs = _inputs(examples, _statistics("6"), {tuner.EPISODE_PROPERTY: recorded}, "r1")
    other = tuner.retune_decision(other_inputs, CONFIG, now=1e12)
    assert other.search and tuner.episode(other_inputs, other, "r4")["searches"] == 1
