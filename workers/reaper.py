"""What every worker's main process does every few seconds for the whole fleet, besides its own
heartbeat: put the jobs of dead workers back in their queues, delete the stored audio of expired
jobs, and forget workers that are gone.

Why a reaper of our own: a task message stays in the broker's `unacked` hash until its job has
ended (late ack). kombu's Redis transport gives a dead consumer's messages back only after the
visibility timeout, which must outlast the longest job (ten minutes). A job's lease says much
sooner that its worker is gone: the reaper looks at the messages delivered more than a lease ago
and, for each,

- job ended (or its record expired): the message is done with; it is removed (acked);
- job running under a live lease: left alone;
- job running, lease lapsed: marked `lapsed_at` the first time; once it has stayed lapsed for a
  grace period (so that a live owner whose lease lapsed while Redis was away can take it back,
  `JobStore.renew`), the message goes back to the head of its queue and the job to `queued`;
- job queued for longer than `ORPHAN_SECONDS` since its message was delivered: the worker that
  took the message died before claiming it; the message goes back.

And a job queued for longer than `ORPHAN_SECONDS` whose message is nowhere, neither waiting nor
unacked, is sent again (`resend_lost`): kombu's consumer pops a message and records it as unacked
in two steps, so a consumer killed, or cut off by a Redis restart, between them loses it.

Each check and move is one Lua script over one message, so two reapers never move a message twice
and a message is never in the queue and `unacked` at once. One worker of the fleet does a pass per
interval (whichever takes `REAPER_TURN` first), so the reaper's Redis traffic does not grow with
the number of workers. Exactly-once completion is kept by the
job's claim, not by the reaper: a message put back by mistake finds its job claimed or ended.
"""

from __future__ import annotations

import logging
import time

from workers.batching import UNACKED, UNACKED_INDEX
from workers.jobs import EXPIRING, PREFIX, queued_key
from workers.monitoring import WORKERS, worker_keys

log = logging.getLogger(__name__)

REAPER_TURN = f"{PREFIX}:reaper"  # held by the worker whose pass it is
LOST_TURN = f"{PREFIX}:reaper:lost"  # the search for lost messages runs once per its expiry
ORPHAN_SECONDS = 60.0  # a delivered message whose job nobody claimed this long is an orphan
SCAN_LIMIT = 500  # messages looked at per pass

# KEYS unacked, unacked_index; ARGV tag, now, grace seconds, orphan seconds, queues (comma list)
# Returns the outcome for this message: gone | acked | held | lapsed | restored | orphan | skipped
_REAP = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 'gone'
end
local entry = cjson.decode(raw)
local routing_key = entry[3]
local id = (entry[1]['headers'] or {})['id']
local ours = string.find(',' .. ARGV[5] .. ',', ',' .. routing_key .. ',', 1, true)
if type(id) ~= 'string' or not ours then
  return 'skipped'
end
local job = 'PREFIX:job:' .. id
local state = redis.call('HGET', job, 'state')
local now = tonumber(ARGV[2])

local function restore(job_state_queued, reason)
  -- the message's own text, as kombu stored it: never decoded and encoded again
  local text = string.match(raw, '^%[(.*),%s*"[^"]*"%s*,%s*"[^"]*"%s*%]$')
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('RPUSH', routing_key, text)  -- consumers pop from the right: it runs next
  if job_state_queued then
    redis.call('HSET', job, 'state', 'queued')
    redis.call('HSETNX', job, 'last_loss', reason)  -- a worker's own word on the loss comes first
    redis.call('HDEL', job, 'lapsed_at')
    redis.call('ZADD', 'PREFIX:queued:' .. redis.call('HGET', job, 'kind'),
               redis.call('HGET', job, 'submitted_at'), id)
  end
end

if not state or state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 'acked'
end
if state == 'running' then
  if redis.call('EXISTS', 'PREFIX:lease:' .. id) == 1 then return 'held' end
  local lapsed = tonumber(redis.call('HGET', job, 'lapsed_at'))
  if not lapsed then
    redis.call('HSET', job, 'lapsed_at', ARGV[2])
    return 'lapsed'
  end
  if now - lapsed < tonumber(ARGV[3]) then return 'lapsed' end
  restore(true, 'its worker stopped renewing its lease (the worker died or lost Redis)')
  return 'restored'
end
-- queued: nobody claimed it since the message was delivered
local delivered = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1])) or now
if now - delivered < tonumber(ARGV[4]) then return 'held' end
restore(false, '')
return 'orphan'
""".replace("PREFIX", PREFIX)

# KEYS expiring; ARGV now, limit: the stored files whose jobs have expired, taken off the list
_EXPIRED = """
local refs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #refs > 0 then redis.call('ZREM', KEYS[1], unpack(refs)) end
return refs
"""


class Reaper:
    """One pass of the fleet's upkeep; `run_once()` is called from the heartbeat thread."""

    def __init__(self, r, queues, lease_seconds: float, worker_expires: float, storage=None,
                 orphan_seconds: float = ORPHAN_SECONDS, resend=None):
        self.r = r
        self.queue_names = list(queues)
        self.resend = resend  # resend(kind, job_id) sends a job's task message again
        self.orphan_seconds = orphan_seconds
        self.queues = ",".join(queues)
        self.min_age = lease_seconds  # a message younger than a lease cannot have lapsed
        self.grace = lease_seconds / 2  # > the owner's renewal period (a third of a lease)
        self.worker_expires = worker_expires
        self.storage = storage  # workers.storage.Storage, or None: files are left alone
        self._reap = r.register_script(_REAP)
        self._expired = r.register_script(_EXPIRED)

    def run_once(self, interval: float | None = None, owner: str = "") -> dict | None:
        """One pass; with `interval`, only if no other worker has taken this interval's turn
        (None then)."""
        if interval is not None and not self.r.set(REAPER_TURN, owner or "?", nx=True,
                                                   px=max(1, int(900 * interval))):
            return None
        counts = self.reap()
        counts["resent"] = self.resend_lost()
        counts["files_deleted"] = self.delete_expired_files()
        counts["workers_forgotten"] = self.forget_gone_workers()
        return counts

    def reap(self) -> dict:
        """Look at every message delivered more than a lease ago; returns outcome counts."""
        now = time.time()
        oldest = now - min(self.min_age, self.orphan_seconds)
        tags = self.r.zrangebyscore(UNACKED_INDEX, "-inf", oldest, 0, SCAN_LIMIT)
        counts: dict[str, int] = {}
        for tag in tags:
            outcome = self._reap(keys=[UNACKED, UNACKED_INDEX],
                                 args=[tag, f"{now:.3f}", self.grace, self.orphan_seconds,
                                       self.queues])
            counts[outcome] = counts.get(outcome, 0) + 1
        if counts.get("restored") or counts.get("orphan"):
            log.warning("put back in their queues: %d jobs of lapsed leases, %d orphaned messages",
                        counts.get("restored", 0), counts.get("orphan", 0))
        return counts

    def resend_lost(self, limit: int = 100) -> int:
        """Send again the messages of jobs queued for `orphan_seconds` whose message is neither
        waiting nor unacked. A message sent twice is harmless: the second finds its job claimed
        or ended. Fleet-wide at most once per half `orphan_seconds`, since it reads the queues."""
        if self.resend is None or not self.r.set(LOST_TURN, 1, nx=True,
                                                 px=max(1, int(500 * self.orphan_seconds))):
            return 0
        cutoff = time.time() - self.orphan_seconds
        stale = {q: self.r.zrangebyscore(queued_key(q), "-inf", cutoff, 0, limit)
                 for q in self.queue_names}
        stale = {q: ids for q, ids in stale.items() if ids}
        if not stale:
            return 0
        waiting = [m for q in stale for m in self.r.lrange(q, 0, -1)]
        messages = "\n".join(self.r.hvals(UNACKED) + waiting)
        lost = [(q, job_id) for q, ids in stale.items() for job_id in ids
                if f'"{job_id}"' not in messages]
        for kind, job_id in lost:
            log.warning("job %s waited %g s with no task message anywhere: sending it again",
                        job_id, self.orphan_seconds)
            self.resend(kind, job_id)
        return len(lost)

    def delete_expired_files(self, limit: int = 500) -> int:
        """Delete the stored inputs and outputs of jobs whose records have expired."""
        if self.storage is None:
            return 0
        refs = self._expired(keys=[EXPIRING], args=[f"{time.time():.3f}", limit])
        for ref in refs:
            try:
                self.storage.delete(ref)
            except Exception as e:  # one file that cannot go must not stop the rest
                log.warning("could not delete expired %s: %s", ref, e)
        return len(refs)

    def forget_gone_workers(self) -> int:
        """Drop the monitoring keys of workers silent for `worker_expires` seconds."""
        cutoff = time.time() - self.worker_expires
        gone = self.r.zrangebyscore(WORKERS, "-inf", cutoff)
        if gone:
            with self.r.pipeline() as pipe:
                pipe.zrem(WORKERS, *gone)
                pipe.delete(*[k for host in gone for k in worker_keys(host)])
                pipe.execute()
        return len(gone)
