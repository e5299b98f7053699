"""Waiting on jobs in the gateway without holding a thread each.

    job = await job_ends(settings.redis_url).wait(job_id, timeout)

A request that answers with a finished job (`?wait=`, OpenAI's transcriptions) used to block
one of the event loop's worker threads for as long as its job took, so a few dozen waiting
requests held them all and the next submissions queued behind them: fewer jobs in the queue,
smaller batches. Here one pattern subscription per event loop hears every job's end (the job
store publishes it on `speechq:done:<id>`) and wakes the requests waiting on that job; a waiter
also looks at its job every RECHECK_SECONDS, for an end it could not hear (Redis restarting).
"""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, TimeoutError

from workers.jobs import TERMINAL, Job, done_channel, job_key

RECHECK_SECONDS = 5.0
OUTAGE_PAUSE = 0.5  # between tries while Redis cannot be reached


class JobEnds:
    def __init__(self, url: str):
        self.redis = aioredis.Redis.from_url(url, decode_responses=True)
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._subscribed = asyncio.Event()
        self._listener: asyncio.Task | None = None

    async def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once it has ended, or as it is after `timeout` seconds (None if there is no
        such job). Redis errors that outlast the timeout are raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        woken = asyncio.Event()
        self._waiting.setdefault(job_id, set()).add(woken)
        try:
            if self._listener is None or self._listener.done():
                self._listener = asyncio.create_task(self._listen())
            with contextlib.suppress(asyncio.TimeoutError):  # the end then comes by a look
                await asyncio.wait_for(self._subscribed.wait(), min(timeout, RECHECK_SECONDS))
            while True:
                woken.clear()
                try:
                    found = await self.redis.hgetall(job_key(job_id))
                except (ConnectionError, TimeoutError):
                    if loop.time() >= deadline:
                        raise
                    await asyncio.sleep(OUTAGE_PAUSE)
                    continue
                job = Job.from_hash(found) if found else None
                left = deadline - loop.time()
                if job is None or job.state in TERMINAL or left <= 0:
                    return job
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(left, RECHECK_SECONDS))
        finally:
            waiters = self._waiting.get(job_id, set())
            waiters.discard(woken)
            if not waiters:
                self._waiting.pop(job_id, None)

    async def _listen(self) -> None:
        """Hear every job's end for as long as the loop runs, subscribing again after an outage."""
        start = len(done_channel(""))
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(done_channel("*"))
                self._subscribed.set()
                async for message in pubsub.listen():
                    for woken in self._waiting.get(message["channel"][start:], ()):
                        woken.set()
            except (ConnectionError, TimeoutError, OSError):
                self._subscribed.clear()
                await asyncio.sleep(OUTAGE_PAUSE)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


_ENDS: dict[tuple[int, str], JobEnds] = {}


def job_ends(url: str) -> JobEnds:
    """The event loop's JobEnds for the Redis at `url`."""
    key = (id(asyncio.get_running_loop()), url)
    if key not in _ENDS:
        _ENDS[key] = JobEnds(url)
    return _ENDS[key]
