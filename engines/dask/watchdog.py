"""The watchdog of a running computation on dask (item 10 of the package docstring): a probe run on the
scheduler (its count of task transitions and each worker's status), and the rule that calls the computation
stuck when no task starts or finishes for --dask_stall_seconds, or every worker stays paused (memory) for
--dask_paused_seconds. The runner's result (runner.py) asks it after every poll."""
from __future__ import annotations

import time

# default of --dask_paused_seconds: every worker paused this long fails the step
PAUSED_SECONDS = 60


def scheduler_probe():
    """A function run on the scheduler (defined in here so that it travels by value: a scheduler need not
    import this project): its count of task transitions (it grows whenever a task starts, finishes or is lost)
    and the status of each worker."""
    def probe(dask_scheduler):
        return dask_scheduler.transition_counter, {address: (worker.name, worker.status.name)
                                                   for address, worker in dask_scheduler.workers.items()}
    return probe


class Watchdog:
    """Decides, from the scheduler's answers, that a computation is stuck: no task transition for
    `stall_seconds` (a blocked task, a deadlocked transfer, no workers left), or every worker paused (above
    its memory limit's pause fraction) for min(stall_seconds, paused_seconds)."""

    def __init__(self, stall_seconds: float, paused_seconds: float = PAUSED_SECONDS):
        self.stall_seconds = stall_seconds
        self.paused_seconds = min(stall_seconds, paused_seconds)
        self._transitions, self._progress_at = -1, time.monotonic()
        self._paused_since: float | None = None

    def check(self, answer: tuple[int, dict] | None) -> str | None:
        """What is wrong (one clause), or None. `answer`: the probe's, None if the scheduler did not
        answer."""
        now = time.monotonic()
        transitions, workers = answer if answer is not None else (self._transitions, None)
        if transitions != self._transitions:
            self._transitions, self._progress_at = transitions, now
        if workers and all(status == "paused" for _, status in workers.values()):
            self._paused_since = self._paused_since or now
            if now - self._paused_since >= self.paused_seconds:
                names = ", ".join(sorted(str(name) for name, _ in workers.values()))
                return (
                    f"every dask worker ({names}) has been paused for {now - self._paused_since:.0f}s: their "
                    "memory is above the pause threshold (distributed.worker.memory.pause) of their limit"
                )
        else:
            self._paused_since = None
        if now - self._progress_at >= self.stall_seconds:
            if answer is None:
                seen = "the scheduler did not answer"
            elif not workers:
                seen = "no worker is connected to the scheduler"
            else:
                seen = "workers " + ", ".join(f"{name} {status}" for name, status in sorted(
                    (str(name), status) for name, status in workers.values()))
            return f"no dask task started or finished for {now - self._progress_at:.0f}s ({seen})"
        return None
