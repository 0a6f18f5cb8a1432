"""The evaluator's gate on recorded per-row correctness (library/paired_gate.py): McNemar's exact test against
the baseline, and the anchor (the best of the last served versions) that small drops cannot walk down. Fast:
numpy only (a unit test)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from library.paired_gate import RowResults, judge, mcnemar_worse_p, row_order

ROWS = 3800  # the size of AG News' test set: one standard error of accuracy is about 0.6 points
DROP = 0.004  # each candidate 0.4 points worse than the one before


def results(correct: np.ndarray, rows: str = "test-rows") -> RowResults:
    return RowResults(rows, np.asarray(correct, bool))


def with_accuracy(accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """A vector with exactly round(accuracy * ROWS) correct rows, at random places (so two such vectors
    disagree on many rows and a 0.4-point difference is not significant)."""
    correct = np.zeros(ROWS, bool)
    correct[rng.choice(ROWS, round(accuracy * ROWS), replace=False)] = True
    return correct


def weekly_pushes(candidates: list[RowResults], anchor_versions: int, significance: float,
                  max_accuracy_drop: float = 0.005) -> list[bool]:
    """Judges the candidates one after the other as retrains do: the baseline is the served (last blessed)
    one, the anchors the last `anchor_versions` served ones; a blessed candidate is served from then on."""
    served, verdicts = [candidates[0]], []
    for candidate in candidates[1:]:
        anchors = {f"version {i}": r for i, r in enumerate(served[-anchor_versions:]) if anchor_versions}
        verdict = judge(candidate, served[-1], anchors, min_accuracy=0.8, max_accuracy_drop=max_accuracy_drop,
                        significance=significance)
        verdicts.append(verdict.blessed)
        if verdict.blessed:
            served.append(candidate)
    return verdicts


def test_ten_candidates_each_slightly_worse_are_refused_after_the_first_by_the_anchor():
    rng = np.random.default_rng(0)
    chain = [results(with_accuracy(0.90 - DROP * week, rng)) for week in range(11)]  # the served one + ten
    # The paired test alone cannot see a 0.4-point step on these rows (p well above 0.05) ...
    assert mcnemar_worse_p(chain[1].correct, chain[0].correct) > 0.1
    verdicts = weekly_pushes(chain, anchor_versions=5, significance=0.05)
    assert verdicts[0] is True and not any(verdicts[1:]), verdicts  # at most the first is blessed
    # ... and a gate against the previous push only (no anchor) lets every one of them through: the drift the
    # anchor exists to stop.
    previous_push_only = [judge(candidate, None, {"previous push": previous}, min_accuracy=0.8,
                                max_accuracy_drop=0.005, significance=0.05).blessed
                          for previous, candidate in zip(chain, chain[1:])]
    assert all(previous_push_only)


def test_a_candidate_significantly_worse_on_the_same_rows_is_refused_within_the_allowed_drop():
    baseline = np.ones(ROWS, bool)
    baseline[:300] = False  # accuracy 0.921
    candidate = baseline.copy()
    candidate[300:312] = False  # 12 rows lost, none gained: 0.32 points, within a 0.5-point drop
    p_value = mcnemar_worse_p(candidate, baseline)
    assert p_value == pytest.approx(0.5 ** 12)
    verdict = judge(results(candidate), results(baseline), {}, min_accuracy=0.8, max_accuracy_drop=0.005,
                    significance=0.05)
    assert not verdict.blessed and "significantly worse than the baseline" in verdict.reason
    assert verdict.p_value == pytest.approx(p_value)
    off = judge(results(candidate), results(baseline), {}, min_accuracy=0.8, max_accuracy_drop=0.005,
                significance=0.0)
    assert off.blessed  # with the test switched off, only the 0.5-point drop applies


def test_mcnemar_exact_matches_the_binomial_tail():
    rng = np.random.default_rng(1)
    baseline, candidate = rng.random(500) < 0.8, rng.random(500) < 0.78
    b = int(np.sum(baseline & ~candidate))
    c = int(np.sum(candidate & ~baseline))
    expected = sum(math.comb(b + c, k) for k in range(b, b + c + 1)) / 2 ** (b + c)
    assert mcnemar_worse_p(candidate, baseline) == pytest.approx(expected)
    assert mcnemar_worse_p(baseline, baseline) == 1.0  # no row tells them apart


def test_anchors_on_other_rows_are_ignored_and_packing_round_trips():
    rng = np.random.default_rng(2)
    candidate = results(with_accuracy(0.85, rng))
    other_rows = results(with_accuracy(0.99, rng), rows="another-test-set")
    verdict = judge(candidate, None, {"version 1": other_rows}, min_accuracy=0.8, max_accuracy_drop=0.005,
                    significance=0.05)
    assert verdict.blessed and verdict.anchor_accuracy is None
    packed = RowResults.from_packed(candidate.rows, candidate.packed(), ROWS)
    assert np.array_equal(packed.correct, candidate.correct) and packed.accuracy == candidate.accuracy


def test_row_order_does_not_depend_on_the_order_rows_come_in():
    rows = [f"row {i}".encode() for i in range(50)]
    order, fingerprint = row_order(rows)
    shuffled = rows[::-1]
    order_2, fingerprint_2 = row_order(shuffled)
    assert fingerprint == fingerprint_2
    assert [rows[i] for i in order] == [shuffled[i] for i in order_2]
    assert row_order(rows[:-1])[1] != fingerprint
