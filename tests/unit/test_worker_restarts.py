"""How soon `serve --workers N` starts again a worker that exited after it listened
(apps/serving/workers.py): a worker that crashes soon after each start waits longer each time, up to a cap;
one that ran a long time is started again at once, and its delays begin again."""
from __future__ import annotations

from apps.serving.workers import FIRST_RESTART_SECONDS, MAX_RESTART_SECONDS, STABLE_SECONDS, restart_delay


def test_quick_exits_double_the_delay_up_to_the_cap():
    delays, delay = [], 0.0
    for _ in range(8):
        delay = restart_delay(delay, uptime=5.0)
        delays.append(delay)
    assert delays[:3] == [FIRST_RESTART_SECONDS, 2 * FIRST_RESTART_SECONDS, 4 * FIRST_RESTART_SECONDS]
    assert delays[-1] == MAX_RESTART_SECONDS and delays == sorted(delays)


def test_a_worker_that_ran_long_enough_is_started_at_once_and_its_delays_begin_again():
    assert restart_delay(MAX_RESTART_SECONDS, uptime=STABLE_SECONDS) == 0.0
    assert restart_delay(0.0, uptime=1.0) == FIRST_RESTART_SECONDS
