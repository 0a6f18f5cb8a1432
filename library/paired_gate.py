"""The evaluator's gate on per-row correctness: a candidate against the baseline and the anchor, on the same
rows.

A model's result on the fixed test set is kept as one bit per row (correct or not), the rows in a fixed order
(by the SHA-256 of each serialized example, so the order does not depend on how the rows were sharded), with a
fingerprint of that order: two vectors with the same fingerprint are answers to the very same rows, and can be
compared pairwise. Packed, 7,600 rows take 1,900 hex characters: an artifact property, so judging a candidate
never reloads an old model.

The gate refuses a candidate that is
- below `min_accuracy`;
- significantly worse than the baseline (the served model) on the same rows: McNemar's exact test, one-sided,
  on the rows where exactly one of the two is right (p < `significance`; significance 0 turns the test off);
- more than `max_accuracy_drop` below the anchor: the best accuracy of the baseline and the last served
  versions measured on the same rows. Small drops cannot pile up push after push: the anchor only rises while
  its versions are among the last served ones.
Numpy only; no TensorFlow.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class RowResults:
    """Which rows a model got right: `correct` in row order, `rows` the fingerprint of that order."""
    rows: str
    # bool [N]
    correct: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct)) if len(self.correct) else 0.0

    def packed(self) -> str:
        """The vector as hex (np.packbits), for an artifact property; unpack with from_packed."""
        return np.packbits(self.correct.astype(np.uint8)).tobytes().hex()

    @classmethod
    def from_packed(cls, rows: str, packed: str, count: int) -> "RowResults":
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(packed), np.uint8))[:count]
        return cls(rows, bits.astype(bool))


def row_order(serialized: Iterable[bytes]) -> tuple[np.ndarray, str]:
    """(permutation, fingerprint): the permutation sorting the rows by the SHA-256 of their bytes, and the
    fingerprint of the sorted row hashes (the same rows give the same fingerprint in any input order)."""
    digests = [hashlib.sha256(row).digest() for row in serialized]
    order = np.array(sorted(range(len(digests)), key=digests.__getitem__), dtype=np.int64)
    fingerprint = hashlib.sha256(b"".join(digests[i] for i in order)).hexdigest()[:32]
    return order, fingerprint


def mcnemar_worse_p(candidate: np.ndarray, baseline: np.ndarray) -> float:
    """One-sided exact McNemar p-value that the candidate is worse than the baseline on the same rows: with b
    the rows only the baseline gets right and c those only the candidate gets right, P(X >= b) for X ~ Bin(b +
    c, 1/2). 1.0 when no row tells them apart."""
    b = int(np.sum(baseline & ~candidate))
    c = int(np.sum(candidate & ~baseline))
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(b, n + 1))
    return min(1.0, tail / 2 ** n)


@dataclass(frozen=True)
class Verdict:
    blessed: bool
    reason: str
    # versus the baseline; None without one on the same rows
    p_value: float | None
    # the best of the baseline and the anchors on the same rows
    anchor_accuracy: float | None
    # which model holds the anchor (e.g. "baseline", "version 3")
    anchor_name: str | None


def judge(candidate: RowResults, baseline: RowResults | None, anchors: dict[str, RowResults], *,
          min_accuracy: float, max_accuracy_drop: float, significance: float) -> Verdict:
    """The gate (see the module docstring). `anchors` maps a name ("version 3") to its recorded results; those
    measured on other rows than the candidate's are ignored (a changed test set starts a new anchor)."""
    accuracy = candidate.accuracy
    problems, notes = [], []
    if accuracy < min_accuracy:
        problems.append(f"accuracy {accuracy:.4f} is below min_accuracy {min_accuracy:.4f}")
    p_value = None
    if baseline is not None and baseline.rows == candidate.rows:
        p_value = mcnemar_worse_p(candidate.correct, baseline.correct)
        change = accuracy - baseline.accuracy
        text = (
            f"{change:+.4f} versus the baseline's {baseline.accuracy:.4f} on the same "
            f"{len(candidate.correct)} "
            f"rows (McNemar p = {p_value:.4f})"
        )
        if significance > 0 and change < 0 and p_value < significance:
            problems.append(f"significantly worse than the baseline: {text} < significance {significance}")
        else:
            notes.append(text)
    same_rows = {name: r for name, r in anchors.items() if r.rows == candidate.rows}
    if baseline is not None and baseline.rows == candidate.rows:
        same_rows = {"baseline": baseline, **same_rows}
    anchor_name, anchor = max(same_rows.items(), key=lambda item: item[1].accuracy, default=(None, None))
    anchor_accuracy = None if anchor is None else anchor.accuracy
    if anchor is not None:
        drop = anchor.accuracy - accuracy
        text = (f"the anchor's {anchor.accuracy:.4f} ({anchor_name}, the best of {len(same_rows)} served "
                f"model(s) on these rows)")
        if drop > max_accuracy_drop + 1e-12:
            problems.append(f"accuracy {accuracy:.4f} is {drop:.4f} below {text}, more than the allowed drop "
                            f"{max_accuracy_drop:.4f}")
        else:
            notes.append(f"{-drop:+.4f} versus {text} (allowed drop {max_accuracy_drop:.4f})")
    if problems:
        return Verdict(False, "; ".join(problems), p_value, anchor_accuracy, anchor_name)
    reason = f"accuracy {accuracy:.4f} >= min_accuracy {min_accuracy:.4f}"
    reason += (" and " + "; ".join(notes)) if notes else "; no baseline (first blessing)"
    return Verdict(True, reason, p_value, anchor_accuracy, anchor_name)
