"""A TTS job's audio, sentence by sentence, while it is made: a Redis stream per job.

    publish(r, job_id, index, count, pcm, sample_rate)   # the worker, as each sentence is vocoded
    async for part in read(r, job_id): ...                # the gateway, streaming a response out

Only a job whose request asks for it (`"stream": true`, as the OpenAI-compatible speech
endpoint does) publishes its parts. Each part is one sentence (the pause before it included)
as 16-bit mono PCM at the job's sample rate, with its index and the number of sentences, so a
reader knows when it has them all. When the job ends, the job store adds an end mark (its
state) to the stream (workers.jobs), so a reader stops at a job that failed or was cancelled
part way instead of waiting for parts that will not come. The stream expires a while after its
last entry: it is a pipe, not a store (the whole file is stored as every job's output is).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from workers.jobs import PARTS_EXPIRE, PREFIX


def parts_key(job_id: str) -> str:
    return f"{PREFIX}:parts:{job_id}"


@dataclass(frozen=True)
class Part:
    index: int  # the sentence, from 0
    count: int  # sentences in the job
    pcm: bytes  # 16-bit little-endian mono
    sample_rate: int

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


def publish(r, job_id: str, index: int, count: int, pcm: bytes, sample_rate: int) -> None:
    key = parts_key(job_id)
    pipe = r.pipeline()
    pipe.xadd(key, {"index": index, "count": count, "rate": sample_rate, "pcm": pcm})
    pipe.expire(key, PARTS_EXPIRE)
    pipe.execute()


async def read(r, job_id: str, block_ms: int = 2000) -> AsyncIterator[Part | None]:
    """The job's parts in order, from the first; None after each `block_ms` without one, so the
    caller can look at the job meanwhile. Ends after the last part, or at the job's end mark
    (the job ended without it: failed or cancelled). `r` is a redis.asyncio client. A part
    already read is skipped when it comes again: a batch that drops a cancelled job, or a job
    run again after its worker died, makes its sentences again from the first."""
    key, last_id, expected = parts_key(job_id), "0", 0
    while True:
        answer = await r.xread({key: last_id}, count=16, block=block_ms)
        if not answer:
            yield None
            continue
        for entry_id, fields in answer[0][1]:
            last_id = entry_id
            if b"end" in fields:
                return
            part = Part(int(fields[b"index"]), int(fields[b"count"]), fields[b"pcm"],
                        int(fields[b"rate"]))
            if part.index != expected:
                continue
            expected += 1
            yield part
            if part.last:
                return
