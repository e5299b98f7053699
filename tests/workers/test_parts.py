"""A streamed job's parts in the real Redis: read in order, a repeated part skipped, and the
job's end mark stopping a reader whose job ended part way."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from tests.workers.conftest import REDIS_URL, flush
from workers import parts
from workers.jobs import JobStore, connect

PCM = b"\x01\x00" * 80


async def _read_all(job_id: str, timeout: float = 5.0) -> list[int] | None:
    """The indices a reader yields before it ends; None if it does not end in `timeout`."""
    r = aioredis.Redis.from_url(REDIS_URL)
    indices = []

    async def read() -> None:
        async for part in parts.read(r, job_id, block_ms=100):
            if part is not None:
                indices.append(part.index)
    try:
        await asyncio.wait_for(read(), timeout)
        return indices
    except TimeoutError:
        return None
    finally:
        await r.aclose()


def _store() -> JobStore:
    flush()
    return JobStore(connect(REDIS_URL), result_expires=60)


def test_a_reader_ends_after_the_last_part_and_skips_repeats():
    store = _store()
    store.create("whole", "tts", {"text": "a. b.", "stream": True})
    for index in (0, 0, 1):  # a batch that ran again makes its first sentence again
        parts.publish(store.r, "whole", index, 2, PCM, 16_000)
    assert asyncio.run(_read_all("whole")) == [0, 1]


def test_a_job_that_ends_part_way_stops_its_readers():
    store = _store()
    store.create("cut", "tts", {"text": "a. b. c.", "stream": True})
    parts.publish(store.r, "cut", 0, 3, PCM, 16_000)
    assert store.cancel("cut") == "cancelled"  # a queued job ends at once
    start = time.monotonic()
    assert asyncio.run(_read_all("cut")) == [0]
    assert time.monotonic() - start < 1
    entries = store.r.xrange(parts.parts_key("cut"))
    assert entries[-1][1] == {"end": "cancelled"} and store.r.ttl(parts.parts_key("cut")) > 0


def test_a_job_that_does_not_stream_gets_no_stream():
    store = _store()
    store.create("plain", "tts", {"text": "a."})
    store.cancel("plain")
    assert not store.r.exists(parts.parts_key("plain"))
