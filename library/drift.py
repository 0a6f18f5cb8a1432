"""Drift of a new span from its reference (the served model's training window, or the rest of the window
before a model is served), five measures and their verdict, and the data-quality checks of a span, kept apart:
a bad export is not a change of the world and asks for no new search.

Drift (distribution):
  label_linf        L-infinity distance between the label distributions (the largest change of one class's
                    share), TFDV's comparator for categorical features;
  length_js         Jensen-Shannon divergence (base 2, 0..1) between the histograms of text length in tokens
                    (title + description), computed only when both sides have at least `length_min_rows` rows
                    (below that a histogram is mostly noise);
  oov_share         the share of the new span's tokens that never occur in the reference spans (new words);
  vocab_oov_share   the share of the new span's tokens outside the served model's vocabulary (what the model
                    reads as out-of-vocabulary: new words and the rare ones transform.vocab_size cut);
  prediction_linf   L-infinity distance between the served model's predicted-class mix on the new span and on
                    its own window's held-out rows: label-free, it moves with the label mix and with text the
                    model reads differently.
The last two need a served model (validate computes them; None before one is served).

Data quality (quality()): empty_span (no rows), duplicate_rows (share of rows repeating an earlier row of the
span), test_overlap (share of rows whose text is also in the fixed test set: training on them inflates the
test accuracy) refuse a span above their thresholds; row_count_change (|span rows / mean rows of the other
spans - 1|) is reported only: a half-size export is no reason to re-tune or to stop.

No comparator works on the raw text values: every article is unique, so a distance between the
distributions of free text is large by construction (tensorflow/data-validation#216). Tokens split like the
transform's (runs of letters and digits, lowercased), without its HTML clean-up. Pure Python: the validate
component reads the spans and calls these.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field

# tokens; one more bin above the last
LENGTH_BIN_EDGES = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 100)
_TOKEN = re.compile(r"[^\W_]+")
MEASURES = ("label_linf", "length_js", "oov_share", "vocab_oov_share", "prediction_linf")
# Data-quality checks: the first three refuse a span (their name is the quarantine reason), the last is
# only reported.
QUALITY_CHECKS = ("empty_span", "bad_rows", "duplicate_rows", "test_overlap", "row_count_change")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def length_bin(length: int) -> int:
    return next((i for i, edge in enumerate(LENGTH_BIN_EDGES) if length < edge), len(LENGTH_BIN_EDGES))


@dataclass
class SpanProfile:
    """What the measures need from one span's rows."""
    rows: int = 0
    labels: Counter = field(default_factory=Counter)
    # length bin -> rows
    lengths: Counter = field(default_factory=Counter)
    token_counts: Counter = field(default_factory=Counter)

    def add(self, label: int, text: str) -> None:
        words = tokens(text)
        self.rows += 1
        self.labels[label] += 1
        self.lengths[length_bin(len(words))] += 1
        self.token_counts.update(words)

    def merged(self, other: "SpanProfile") -> "SpanProfile":
        return SpanProfile(self.rows + other.rows, self.labels + other.labels, self.lengths + other.lengths,
                           self.token_counts + other.token_counts)


def _distribution(counts: Counter, keys) -> list[float]:
    total = sum(counts[key] for key in keys)
    return [counts[key] / total if total else 0.0 for key in keys]


def l_infinity(a: Counter, b: Counter) -> float:
    keys = sorted(set(a) | set(b))
    return max((abs(x - y) for x, y in zip(_distribution(a, keys), _distribution(b, keys))), default=0.0)


def jensen_shannon(a: Counter, b: Counter) -> float:
    keys = sorted(set(a) | set(b))
    p, q = _distribution(a, keys), _distribution(b, keys)

    def kl(x, m):
        return sum(xi * math.log2(xi / mi) for xi, mi in zip(x, m) if xi > 0)

    m = [(pi + qi) / 2 for pi, qi in zip(p, q)]
    return max(0.0, (kl(p, m) + kl(q, m)) / 2)


def merged(profiles: list[SpanProfile]) -> SpanProfile:
    total = SpanProfile()
    for profile in profiles:
        total = total.merged(profile)
    return total


def vocab_oov_share(newest: SpanProfile, vocabulary: set[str]) -> float | None:
    """The share of the span's tokens not in `vocabulary`; None for a span without tokens."""
    total = sum(newest.token_counts.values())
    unseen = sum(count for token, count in newest.token_counts.items() if token not in vocabulary)
    return unseen / total if total else None


def measure(newest: SpanProfile, others: list[SpanProfile], length_min_rows: int) -> dict[str, float | None]:
    """{measure: value} of the measures between two profiles (the served model's are the caller's); None where
    it cannot be computed (too few rows, no other span)."""
    rest = merged(others)
    if not others or newest.rows == 0 or rest.rows == 0:
        return {name: None for name in MEASURES[:3]}
    new_tokens = sum(newest.token_counts.values())
    unseen = sum(count for token, count in newest.token_counts.items() if token not in rest.token_counts)
    enough = min(newest.rows, rest.rows) >= length_min_rows
    return {
        "label_linf": l_infinity(newest.labels, rest.labels),
        "length_js": jensen_shannon(newest.lengths, rest.lengths) if enough else None,
        "oov_share": unseen / new_tokens if new_tokens else 0.0,
    }


def verdict(values: dict[str, float | None], thresholds: dict[str, float]) -> list[dict]:
    """One row per measure with a threshold: {measure, value, threshold, drift}; a measure without a value
    never drifts."""
    return [{"measure": name, "value": values.get(name), "threshold": thresholds[name],
             "drift": values.get(name) is not None and values[name] > thresholds[name]}
            for name in MEASURES if name in thresholds]


def text_key(title: str, description: str) -> str:
    """A row's text, lowercased and with whitespace collapsed, hashed: equal keys are the same article."""
    text = " ".join(f"{title}\x1f{description}".lower().split())
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def quality(keys: Counter, test_keys: set[str], other_rows: list[int], thresholds: dict[str, float],
            bad_rows: int | None = None) -> list[dict]:
    """One row per data-quality check of a span: {check, value, threshold, failed, refuses}. `keys` counts the
    span's text_key()s, `test_keys` are the fixed test set's, `other_rows` the row counts of the spans it is
    compared with (none: no row_count_change), `bad_rows` the span's rows ingest quarantined (None: not
    known)."""
    rows = sum(keys.values())
    mean_other = sum(other_rows) / len(other_rows) if other_rows else 0
    read = rows + (bad_rows or 0)
    values = {
        "empty_span": float(rows == 0),
        "bad_rows": bad_rows / read if bad_rows is not None and read else None,
        "duplicate_rows": (rows - len(keys)) / rows if rows else None,
        "test_overlap": sum(count for key, count in keys.items() if key in test_keys) / rows
        if rows
        else None,
        "row_count_change": abs(rows / mean_other - 1) if mean_other else None,
    }
    limits = {
        "empty_span": 0.0,
        "bad_rows": thresholds.get("bad_row_share", 0.01),
        "duplicate_rows": thresholds["duplicate_share"],
        "test_overlap": thresholds["test_overlap_share"],
        "row_count_change": thresholds["row_count_change"],
    }
    return [{"check": name, "value": values[name], "threshold": limits[name],
             "failed": values[name] is not None and values[name] > limits[name],
             "refuses": name != "row_count_change"} for name in QUALITY_CHECKS]
