"""The gateway's job waiter against the real Redis: woken by the job's end, not by its periodic
look; a job that does not end in time is returned as it is; an unknown job is None."""

from __future__ import annotations

import asyncio
import threading
import time

from tests.workers.conftest import REDIS_URL, flush
from workers.jobs import JobStore, connect
from workers.waiting import RECHECK_SECONDS, JobEnds


def test_a_waiter_wakes_at_the_jobs_end():
    flush()
    store = JobStore(connect(REDIS_URL), result_expires=60)
    store.create("ends", "tts", {"text": "a."})
    store.create("stays", "tts", {"text": "b."})
    threading.Timer(0.5, store.cancel, args=["ends"]).start()

    async def scenario():
        ends = JobEnds(REDIS_URL)
        start = time.monotonic()
        ended = await ends.wait("ends", 30)
        woke_after = time.monotonic() - start
        stays = await ends.wait("stays", 0.3)
        return ended, woke_after, stays, await ends.wait("nothing", 5), ends._waiting

    ended, woke_after, stays, unknown, waiting = asyncio.run(scenario())
    assert ended.state == "cancelled" and 0.4 < woke_after < RECHECK_SECONDS / 2
    assert stays.state == "queued" and unknown is None
    assert waiting == {}  # nothing left behind
