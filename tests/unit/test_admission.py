"""The delay estimate behind `serve --max-queue-delay-ms` (apps/serving/admission.py): a batch costs a fixed
part plus a part per row, so a short queue that one batch takes is not priced as many small batches, while a
long queue of full batches is priced at what full batches cost; the batches running now and the request's own
batch count too, so that accepted requests are answered within the bound."""
from __future__ import annotations

import pytest

from apps.serving.admission import BatchCost, queue_delay

FIXED, PER_ROW = 0.020, 0.0001  # seconds: a model call on 2 busy cores, and what each row adds


def fitted(sizes) -> BatchCost:
    cost = BatchCost(0.2)
    for rows in sizes:
        cost.observe(rows, FIXED + PER_ROW * rows)
    return cost


def test_the_fit_recovers_the_fixed_and_the_per_row_cost():
    cost = fitted([1, 3, 2, 8, 64, 5, 32, 2, 1, 16] * 3)
    assert cost.seconds(1) == pytest.approx(FIXED + PER_ROW, rel=1e-6)
    assert cost.seconds(64) == pytest.approx(FIXED + 64 * PER_ROW, rel=1e-6)


def test_a_queue_is_priced_as_batches_not_one_batch_per_row():
    # A light load (batches of 1-3 rows): priced per row at the small batches' average (what the estimate
    # was), 24 queued rows came out at 120 ms and requests were refused during a hot reload.
    cost = fitted([1, 2, 3, 2] * 5)
    per_row_average = sum(FIXED + PER_ROW * r for r in (1, 2, 3, 2)) / (1 + 2 + 3 + 2)
    assert 24 * per_row_average / 2 > 0.1
    # The next round (2 threads x 64 rows) takes all 24: they wait only for the batches running now.
    assert queue_delay(cost, queued_rows=24, queued_requests=12, batch_rows=64, threads=2, merge=True) == 0.0
    # 3 batches' worth and 24 rows: three full batches and a small one, over 2 threads.
    delay = queue_delay(cost, queued_rows=3 * 64 + 24, queued_requests=99, batch_rows=64, threads=2,
                        merge=True)
    full = FIXED + 64 * PER_ROW
    assert delay == pytest.approx((3 * full + FIXED + 24 * PER_ROW) / 2 + full, rel=1e-6)


def test_a_long_queue_is_priced_at_full_batches():
    cost = fitted([64, 60, 64, 48, 64] * 4)
    delay = queue_delay(cost, queued_rows=10 * 64, queued_requests=10, batch_rows=64, threads=2, merge=True)
    assert delay == pytest.approx(10 * (FIXED + 64 * PER_ROW) / 2 + FIXED + 64 * PER_ROW, rel=1e-6)


def test_without_batching_every_request_is_a_call():
    cost = fitted([1, 2, 3] * 5)
    delay = queue_delay(cost, queued_rows=20, queued_requests=10, batch_rows=64, threads=2, merge=False)
    assert delay == pytest.approx(10 * (FIXED + 2 * PER_ROW) / 2 + FIXED + 2 * PER_ROW, rel=1e-6)


def test_one_batch_size_so_far_and_no_batch_yet():
    assert queue_delay(BatchCost(0.2), 100, 10, 64, 2, True) == 0.0  # nothing timed: nothing refused
    cost = fitted([8] * 5)
    assert cost.seconds(2) == pytest.approx(FIXED + 8 * PER_ROW)  # fewer rows cost no less: the fixed part
    assert cost.seconds(16) == pytest.approx(2 * (FIXED + 8 * PER_ROW))  # more rows, in proportion


def test_the_running_batches_and_its_own_batch_count_so_accepted_requests_answer_within_the_bound():
    # A 2x overload of 64-row requests kept the queue at 100 ms of batches and answered in 116 ms (p50) and
    # 144 ms (p99): the batches running at arrival and the request's own batch came on top of the wait.
    cost = fitted([64] * 10)
    full = FIXED + 64 * PER_ROW
    queued = queue_delay(cost, queued_rows=6 * 64, queued_requests=6, batch_rows=64, threads=2, merge=True)
    assert queued == pytest.approx(6 * full / 2 + full, rel=1e-6)
    running = queue_delay(cost, queued_rows=6 * 64, queued_requests=6, batch_rows=64, threads=2, merge=True,
                          running_left=1.5 * full)
    assert running == pytest.approx((6 * full + 1.5 * full) / 2 + full, rel=1e-6)
