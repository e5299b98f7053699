"""Dynamic batching: once a worker process holds one job, it takes the jobs of the same kind
that are already waiting and runs them as one batch, the way Triton's dynamic batcher does.

Celery hands the process one message (prefetch 1, late ack). The collector then takes more
messages of that queue straight from the broker, recording each as unacked the way kombu's Redis
transport does, and acks it when its job has ended. If the process dies, the transport puts them
back after the visibility timeout, as it does for the message
Celery delivered (see `_PULL`). Collection stops at `max_batch_size` jobs, at the batch's audio-seconds (ASR) or
characters (TTS) budget, or `batch_wait_ms` after it started, whichever comes first.

Unlike celery-batches, nothing is prefetched: a worker takes only what is waiting when it is
free, and other workers keep getting the rest.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from workers.settings import task_name

log = logging.getLogger(__name__)

JSON = "application/json"


def refusal(content_type: str) -> str:
    return f"refused: the message is {content_type}; workers accept JSON only"


# Take the next message of a queue and record it as unacked in one step, in the layout kombu's
# Redis transport uses (`unacked` hash of [message, exchange, routing key] by delivery tag, and
# `unacked_index` by time), so its visibility-timeout restore brings the message back if we die.
# kombu's own basic_get pops and records in two round trips: a process killed between them
# would lose the message. The message text is kept as it is, never decoded and re-encoded.
# KEYS queue, unacked, unacked_index; ARGV now
_PULL = """
local item = redis.call('RPOP', KEYS[1])
if not item then return false end
local message = cjson.decode(item)
local tag = message['properties']['delivery_tag']
local info = message['properties']['delivery_info'] or {}
redis.call('ZADD', KEYS[3], ARGV[1], tag)
redis.call('HSET', KEYS[2], tag, '[' .. item .. ',' .. cjson.encode(info['exchange'] or '') .. ','
           .. cjson.encode(info['routing_key'] or '') .. ']')
return item
"""
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"


@dataclass
class Pulled:
    job_id: str
    tag: str  # the message's delivery tag: its key in the unacked hash


class Puller:
    """Takes waiting task messages of one queue from the broker, one at a time."""

    def __init__(self, r):
        self.r = r
        self._pull = r.register_script(_PULL)

    def get(self, queue: str, refuse=None) -> Pulled | None:
        """The next waiting message's job, or None when the queue is empty or unreachable."""
        try:
            raw = self._pull(keys=[queue, UNACKED, UNACKED_INDEX], args=[time.time()])
        except Exception as e:  # broker away (restart): batch with what we have
            log.warning("could not take more jobs from %s: %s", queue, e)
            return None
        if not raw:
            return None
        message = json.loads(raw)
        headers = message.get("headers") or {}
        pulled = Pulled(headers.get("id", ""), message["properties"]["delivery_tag"])
        content_type = message.get("content-type")
        if content_type != JSON:
            # the refusal Celery's consumer gives: never decode pickle or anything else
            log.error("refusing a message of content type %s on %s (only JSON is accepted): "
                      "task %s id %s", content_type, queue, headers.get("task"), headers.get("id"))
            self.ack(pulled)
            if refuse and pulled.job_id:
                refuse(pulled.job_id, refusal(content_type))
            return None
        if headers.get("task") != task_name(queue) or not pulled.job_id:
            self._requeue(queue, raw, pulled)  # not ours to batch: back for Celery
            return None
        return pulled

    def _requeue(self, queue: str, raw: str, pulled: Pulled) -> None:
        with self.r.pipeline() as pipe:  # MULTI: both or neither
            pipe.rpush(queue, raw)
            pipe.hdel(UNACKED, pulled.tag)
            pipe.zrem(UNACKED_INDEX, pulled.tag)
            pipe.execute()

    def ack(self, pulled: Pulled) -> None:
        try:
            with self.r.pipeline() as pipe:
                pipe.hdel(UNACKED, pulled.tag)
                pipe.zrem(UNACKED_INDEX, pulled.tag)
                pipe.execute()
        except Exception as e:  # the message comes back later and finds its job ended
            log.warning("could not ack job %s: %s", pulled.job_id, e)


@dataclass(frozen=True)
class BatchLimits:
    max_size: int
    max_cost: float  # seconds of audio (ASR) or characters (TTS)
    wait_seconds: float


def collect(take: Callable[[], object | None], cost: Callable[[object], float | None],
            first_cost: float, limits: BatchLimits) -> tuple[list, list]:
    """Take items until the batch is full, over budget, or the wait is over.

    `take()` returns the next waiting item or None; `cost(item)` its cost, or None for an item
    that is not to be batched (it is returned in the second list, to be run on its own).
    The last item taken may overflow the budget by its own cost.

    Returns:
        (batch items, items to run alone)
    """
    batch, alone = [], []
    total = first_cost
    deadline = time.monotonic() + limits.wait_seconds
    while 1 + len(batch) < limits.max_size and total < limits.max_cost:
        item = take()
        if item is None:
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.001, max(0.0, deadline - time.monotonic())))
            continue
        c = cost(item)
        if c is None:
            alone.append(item)
            continue
        batch.append(item)
        total += c
    return batch, alone
