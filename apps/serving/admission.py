"""How long a request arriving now would take to be answered, for admission by time (`serve
--max-queue-delay-ms`): the batches running and queued ahead of it and its own, from a model of what a batch
costs.

A batch of r rows costs about fixed + per_row x r seconds: the fixed part (the model call's own overhead, the
Python around it) is paid once however few rows the batch holds. Both parts are fitted on recent batches by
exponentially weighted least squares. A per-row average alone, taken from the small batches of a light load,
counts the fixed part once per queued row: 24 queued rows that one batch takes at once were estimated at 24
small batches' worth, over 100 ms while a new version's warm-up shared the cores, and requests were refused
during a hot reload at a fraction of the load the server drains. Nor does a queue that the next round of
batches takes whole count: its requests wait only for the batches running now.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BatchCost:
    """Seconds a batch of `rows` rows takes, fitted on the batches observed (each weighs `weight`, the
    earlier ones decay by 1 - weight per batch)."""
    weight: float
    # weighted sums of 1, rows, seconds, rows^2, rows*seconds; None before any batch
    sums: tuple[float, float, float, float, float] | None = None

    def observe(self, rows: int, seconds: float) -> None:
        if rows <= 0:
            return
        sample = (1.0, float(rows), seconds, float(rows * rows), rows * seconds)
        if self.sums is None:
            self.sums = sample
            return
        self.sums = tuple((1 - self.weight) * old + self.weight * new  # type: ignore[assignment]
                          for old, new in zip(self.sums, sample))

    def seconds(self, rows: int) -> float | None:
        """The fitted cost of a batch of `rows` rows; None before any batch."""
        if self.sums is None:
            return None
        total, row_sum, second_sum, square_sum, product_sum = self.sums
        mean_rows, mean_seconds = row_sum / total, second_sum / total
        variance = square_sum / total - mean_rows ** 2
        if variance <= 1e-9 * mean_rows ** 2:
            # one batch size so far: a smaller batch costs no less (its fixed part), a larger one
            # in proportion
            return mean_seconds * max(1.0, rows / mean_rows)
        per_row = max(0.0, (product_sum / total - mean_rows * mean_seconds) / variance)
        fixed = mean_seconds - per_row * mean_rows
        if fixed < 0:  # noise: a line through the origin instead
            fixed, per_row = 0.0, mean_seconds / mean_rows
        return fixed + per_row * rows


def queue_delay(cost: BatchCost, queued_rows: int, queued_requests: int, batch_rows: int, threads: int,
                merge: bool, running_left: float = 0.0) -> float:
    """Seconds until a request arriving now is answered: what is left of the batches running now
    (`running_left`, summed) and the batches the queued rows make (in batches of `batch_rows` when `merge`,
    else one request per batch), spread over the batch threads, then a batch of its own. 0 before the first
    batch has been timed, and 0 while the next round of batches (one per thread) takes the whole queue: such a
    request waits only for the batches running now, which refusing it cannot shorten (when they are slow, say
    while a new version's warm-up shares the cores, a refusal would only fail it)."""
    next_round = batch_rows * threads if merge else threads
    if cost.sums is None or (queued_rows if merge else queued_requests) <= next_round:
        return 0.0
    if merge:
        full, rest = divmod(queued_rows, batch_rows)
        seconds = full * cost.seconds(batch_rows) + (cost.seconds(rest) if rest else 0.0)
        own = cost.seconds(batch_rows)  # past the next round, batches are full
    else:
        own = cost.seconds(max(1, round(queued_rows / queued_requests)))
        seconds = queued_requests * own
    return (seconds + running_left) / threads + own
