"""Stopping the cancelled jobs of a running batch part way through its model call.

`JobStore.cancel` only marks a running job (`cancel_requested`); its worker has to notice. The
runner makes one `CancelWatch` per batch and the engine hands the model call a `should_stop`
hook from it (`Recognizer.transcribe_batch(..., should_stop=...)`, `Synthesizer.synthesize_batch`),
which the pipeline calls between decoding steps, pieces and sentences. The hook asks Redis (one
pipelined HGET over the call's jobs) at most once every `every` seconds, however often it is
called, and raises `Cancelled` naming the call's cancelled jobs; the engine then ends those and
runs the rest of the call again without them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from celery.exceptions import SoftTimeLimitExceeded

log = logging.getLogger(__name__)

CHECK_EVERY = 0.25  # seconds between two looks at Redis: a cancelled job stops within this


class Cancelled(Exception):
    """Raised from inside a model call: these jobs of the call were cancelled."""

    def __init__(self, job_ids: Iterable[str]):
        self.job_ids = frozenset(job_ids)
        super().__init__(f"cancelled: {', '.join(sorted(self.job_ids))}")


class CancelWatch:
    """Which jobs of one batch were asked to stop.

    `requested(job_ids)` returns those of `job_ids` whose cancel was requested
    (`JobStore.cancel_requested`); it is called at most once every `every` seconds.
    """

    def __init__(self, requested: Callable[[list[str]], set[str]], job_ids: Iterable[str],
                 every: float = CHECK_EVERY, clock: Callable[[], float] = time.monotonic):
        self._requested, self.every, self._clock = requested, every, clock
        self.job_ids = list(job_ids)
        self.cancelled: set[str] = set()
        self._last = -float("inf")
        self.queries = 0  # looks at Redis so far

    def poll(self, now: bool = False) -> set[str]:
        """The batch's jobs known to be cancelled; asks Redis if `every` seconds have passed since
        the last look (or at once with `now`). Redis away: what was known stays known."""
        t = self._clock()
        if now or t - self._last >= self.every:
            self._last = t
            self.queries += 1
            try:
                self.cancelled |= self._requested(self.job_ids)
            except SoftTimeLimitExceeded:  # the runner's to handle, like any part of the job
                raise
            except Exception as e:  # Redis restarting: the job runs on, checked next time
                log.warning("could not check for cancelled jobs: %s", e)
        return self.cancelled

    def stop_for(self, job_ids: Iterable[str]) -> Callable[[], bool]:
        """A `should_stop` for a model call over `job_ids`: raises `Cancelled` naming those of
        them that were cancelled; never returns True (the ids are what the caller needs)."""
        ids = frozenset(job_ids)

        def should_stop() -> bool:
            if found := self.poll() & ids:
                raise Cancelled(found)
            return False

        return should_stop
