"""Job records in Redis: the one place a job's state lives.

A job is a hash `speechq:job:<id>`; every change of state is one Lua script, so a job is claimed
by one worker at a time, finishes at most once, and a resubmitted id finds the existing job.

    queued --claim--> running --finish--> succeeded | failed | cancelled
       \\--cancel--> cancelled     \\--lease lapses (worker died)--> claimed again, attempt + 1
                                  \\--release (batch over the soft limit)--> queued, runs alone

A running job holds a lease key that its worker renews while it works. When the worker dies the
lease lapses; every worker's reaper (`workers.reaper`) then puts the job's unacked message back on
its queue within seconds, and the next claim counts another attempt. After `max_attempts` lost
attempts the job fails into the dead-letter list instead of looping.

Besides the hash, each kind keeps a sorted set of the ids that wait to run (`queued_key`, scored by
submission time), so queue depth and the oldest waiting job's age count only jobs that will run;
and ended jobs' stored files are listed by when they expire (`EXPIRING`), for the janitor.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

PREFIX = "speechq"
DEAD_LETTERS = f"{PREFIX}:dead"
STATS = f"{PREFIX}:stats"
EXPIRING = f"{PREFIX}:expiring"  # stored files of ended jobs, scored by when they expire
LATENCY_KEEP = 1000  # recent latencies kept per kind, for percentiles
PARTS_EXPIRE = 600  # seconds a streamed job's parts (workers.parts) outlive their last entry
CLIENT_PATIENCE = 3.0  # seconds a client command waits for an unreachable Redis


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def lease_key(job_id: str) -> str:
    return f"{PREFIX}:lease:{job_id}"


def latency_key(kind: str) -> str:
    """Recent latencies of one kind, newest first, each "<finished at> <seconds>"."""
    return f"{PREFIX}:latency:{kind}"


def queued_key(kind: str) -> str:
    return f"{PREFIX}:queued:{kind}"


def done_channel(job_id: str) -> str:
    return f"{PREFIX}:done:{job_id}"


def connect(url: str, patience: float = 30.0) -> redis.Redis:
    """A client whose commands retry with backoff for about `patience` seconds when Redis cannot
    be reached: workers ride out a restart with a long patience, a client command gives up in a
    few seconds and says so."""
    backoff = ExponentialBackoff(cap=2.0, base=0.05)
    retries, waited = 0, 0.0
    while waited + backoff.compute(retries + 1) <= patience:
        retries += 1
        waited += backoff.compute(retries)
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=min(5.0, max(1.0, patience)),
        socket_timeout=30, health_check_interval=10, retry=Retry(backoff, retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def unreachable(url: str, error: BaseException) -> str:
    """One line for a user whose command could not reach Redis."""
    return f"cannot reach Redis at {redacted(url)}: {error}"


def request_digest(kind: str, request: dict) -> str:
    """A job's request in one string, to tell a retried submission from a different one."""
    return hashlib.sha256(json.dumps([kind, request], sort_keys=True).encode()).hexdigest()


def redacted(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


@dataclass
class Job:
    id: str
    kind: str
    state: str
    request: dict = field(default_factory=dict)
    result: dict | None = None
    error: str | None = None
    error_type: str | None = None
    attempts: int = 0
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    batch_size: int | None = None
    completions: int = 0  # successful finishes recorded; exactly-once means this is 0 or 1
    submitter: str = ""  # the identity that submitted it (workers.auth); "" for a local client
    digest: str = ""  # what was asked for (`request_digest`): a resubmission must match it

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def latency(self) -> float | None:
        if self.finished_at is None or self.submitted_at is None:
            return None
        return self.finished_at - self.submitted_at

    def to_dict(self) -> dict:
        return {"id": self.id, "state": self.state, "result": self.result, "error": self.error,
                "error_type": self.error_type, "kind": self.kind, "attempts": self.attempts,
                "submitted_at": self.submitted_at, "started_at": self.started_at,
                "finished_at": self.finished_at, "worker": self.worker,
                "batch_size": self.batch_size}

    @staticmethod
    def from_hash(h: dict) -> "Job":
        def num(k, cast=float):
            return cast(h[k]) if h.get(k) not in (None, "") else None

        return Job(
            id=h["id"], kind=h["kind"], state=h["state"], request=json.loads(h.get("request") or "{}"),
            result=json.loads(h["result"]) if h.get("result") else None,
            error=h.get("error") or None, error_type=h.get("error_type") or None,
            attempts=int(h.get("attempts", 0)), submitted_at=num("submitted_at"),
            started_at=num("started_at"), finished_at=num("finished_at"),
            worker=h.get("worker") or None, batch_size=num("batch_size", int),
            completions=int(h.get("completions", 0)),
            submitter=h.get("submitter", ""), digest=h.get("digest", ""),
        )


# Lua: one script per transition. KEYS and ARGV are listed above each.

# KEYS job, queued; ARGV id, kind, request, now, submitter, digest
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'kind', ARGV[2], 'request', ARGV[3],
           'state', 'queued', 'attempts', 0, 'submitted_at', ARGV[4], 'completions', 0,
           'submitter', ARGV[5], 'digest', ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""

# shared by the scripts that end a job. KEYS job, lease, stats, latency; ARGV[1..3] now, expires, state
# The job's own stored files (its uploaded input, its output) are listed to expire with it.
_END = """
local function decoded(json)
  local ok, value = pcall(cjson.decode, json or 'null')
  if ok and type(value) == 'table' then return value end
  return {}
end

local function stored_file(value, field, prefix)
  local ref = value[field]
  if type(ref) == 'string' and string.sub(ref, 1, #prefix) == prefix then return ref end
  return nil
end

local function end_job(state, now, expires)
  local id = redis.call('HGET', KEYS[1], 'id')
  local kind = redis.call('HGET', KEYS[1], 'kind')
  redis.call('HSET', KEYS[1], 'state', state, 'finished_at', now)
  redis.call('HDEL', KEYS[1], 'owner', 'lapsed_at')
  redis.call('DEL', KEYS[2])
  redis.call('EXPIRE', KEYS[1], expires)
  redis.call('ZREM', 'PREFIX:queued:' .. kind, id)
  redis.call('HINCRBY', KEYS[3], kind .. ':' .. state, 1)
  local submitted = tonumber(redis.call('HGET', KEYS[1], 'submitted_at'))
  if state == 'succeeded' and submitted then
    local line = string.format('%.3f %.4f', tonumber(now), tonumber(now) - submitted)
    redis.call('LPUSH', KEYS[4], line)
    redis.call('LTRIM', KEYS[4], 0, LATENCY_LAST)
  end
  local gone = tonumber(now) + tonumber(expires)
  local request = decoded(redis.call('HGET', KEYS[1], 'request'))
  local input = stored_file(request, 'audio', 'inputs/' .. id .. '.')
  local output = stored_file(decoded(redis.call('HGET', KEYS[1], 'result')), 'audio_ref',
                             'outputs/' .. id .. '.')
  if input then redis.call('ZADD', 'EXPIRING', gone, input) end
  if output then redis.call('ZADD', 'EXPIRING', gone, output) end
  redis.call('PUBLISH', 'PREFIX:done:' .. id, state)
  if request['stream'] == true then
    -- the end mark in a streamed job's parts (workers.parts): its readers stop there
    redis.call('XADD', 'PREFIX:parts:' .. id, '*', 'end', state)
    redis.call('EXPIRE', 'PREFIX:parts:' .. id, PARTS_EXPIRE)
  end
end
""".replace("LATENCY_LAST", str(LATENCY_KEEP - 1)).replace("PARTS_EXPIRE", str(PARTS_EXPIRE)) \
    .replace("EXPIRING", EXPIRING).replace("PREFIX", PREFIX)

# KEYS job, lease, stats, latency, dead; ARGV now, expires, owner, lease_ms, max_attempts, worker
_CLAIM = _END + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', 0} end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts'))
if state ~= 'queued' and state ~= 'running' then return {'done', attempts} end
if state == 'running' and redis.call('EXISTS', KEYS[2]) == 1 then return {'busy', attempts} end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  redis.call('HSET', KEYS[1], 'error', 'cancelled', 'error_type', 'Cancelled')
  end_job('cancelled', ARGV[1], ARGV[2])
  return {'cancelled', attempts}
end
if attempts >= tonumber(ARGV[5]) then
  local loss = redis.call('HGET', KEYS[1], 'last_loss') or 'its worker process died'
  redis.call('HSET', KEYS[1], 'error_type', 'DeadLetter', 'error',
    'gave up after ' .. attempts .. ' attempts: ' .. loss .. ' each time; moved to the dead-letter list')
  end_job('failed', ARGV[1], ARGV[2])
  redis.call('RPUSH', KEYS[5], redis.call('HGET', KEYS[1], 'id'))
  return {'dead', attempts}
end
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[3], 'started_at', ARGV[1], 'worker', ARGV[6])
redis.call('HDEL', KEYS[1], 'lapsed_at')
redis.call('ZREM', 'PREFIX:queued:' .. redis.call('HGET', KEYS[1], 'kind'),
           redis.call('HGET', KEYS[1], 'id'))
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return {'claimed', attempts, redis.call('HGET', KEYS[1], 'request'),
        redis.call('HGET', KEYS[1], 'run_alone') or '0'}
""".replace("PREFIX", PREFIX)

# KEYS job, lease, stats, latency; ARGV now, expires, owner, state, result, error, error_type, batch
# The owner may still finish a job the reaper put back in the queue (its lease lapsed while Redis
# was away, say) as long as no other worker has claimed it since.
_FINISH = _END + """
local state = redis.call('HGET', KEYS[1], 'state')
local ours = redis.call('HGET', KEYS[1], 'owner') == ARGV[3]
if (state ~= 'running' and state ~= 'queued') or not ours then
  return 0
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[6], 'error_type', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'batch_size', ARGV[8]) end
if ARGV[4] == 'succeeded' then redis.call('HINCRBY', KEYS[1], 'completions', 1) end
end_job(ARGV[4], ARGV[1], ARGV[2])
return 1
"""

# KEYS job, lease, stats, latency; ARGV now, expires
_CANCEL = _END + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'error', 'cancelled before it started', 'error_type', 'Cancelled')
  end_job('cancelled', ARGV[1], ARGV[2])
  return 'cancelled'
end
if state == 'running' then redis.call('HSET', KEYS[1], 'cancel_requested', 1) end
return state
"""

# KEYS job, lease, stats, latency; ARGV now, expires, error, error_type: fail a job nobody runs
_REFUSE = _END + """
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'error', ARGV[3], 'error_type', ARGV[4])
end_job('failed', ARGV[1], ARGV[2])
return 1
"""

# KEYS job, lease; ARGV owner: give a claimed job back to the queue (no attempt counted), marked
# to run alone, so it cannot land in the same over-long batch again and again
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'run_alone', 1)
redis.call('ZADD', 'PREFIX:queued:' .. redis.call('HGET', KEYS[1], 'kind'),
           redis.call('HGET', KEYS[1], 'submitted_at'), redis.call('HGET', KEYS[1], 'id'))
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HDEL', KEYS[1], 'owner')
redis.call('DEL', KEYS[2])
return 1
""".replace("PREFIX", PREFIX)

# KEYS job, lease, job, lease, ...; ARGV owner, lease_ms: renew the leases this owner holds, and
# take back one that lapsed (Redis was away longer than a lease) while the job is still ours
_RENEW = """
local n = 0
for i = 1, #KEYS, 2 do
  local holder = redis.call('GET', KEYS[i + 1])
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[2]); n = n + 1
  elseif not holder and redis.call('HGET', KEYS[i], 'owner') == ARGV[1]
      and redis.call('HGET', KEYS[i], 'state') == 'running' then
    redis.call('SET', KEYS[i + 1], ARGV[1], 'PX', ARGV[2])
    redis.call('HDEL', KEYS[i], 'lapsed_at'); n = n + 1
  end
end
return n
"""


@dataclass(frozen=True)
class Claim:
    status: str  # claimed | busy | done | cancelled | dead | missing
    attempts: int
    request: dict | None = None  # the job's request, when claimed
    run_alone: bool = False  # released from a batch that ran over the soft limit

    @property
    def claimed(self) -> bool:
        return self.status == "claimed"

    @property
    def batchable(self) -> bool:
        """Claimed on its first attempt and never split from a batch; any other job runs alone,
        so a job that kills or stalls its batch cannot take the same jobs down twice."""
        return self.claimed and self.attempts == 1 and not self.run_alone


class JobStore:
    def __init__(self, client: redis.Redis, result_expires: int = 86_400, max_attempts: int = 3,
                 lease_seconds: float = 15.0, quick: redis.Redis | None = None):
        self.r = client
        self.quick = quick or client  # for checks that may be skipped while Redis is away
        self.result_expires = result_expires
        self.max_attempts = max_attempts
        self.lease_ms = int(lease_seconds * 1000)
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._release = client.register_script(_RELEASE)
        self._refuse = client.register_script(_REFUSE)
        self._renew = client.register_script(_RENEW)

    @classmethod
    def from_settings(cls, settings, patience: float = CLIENT_PATIENCE) -> "JobStore":
        """Clients give up on an unreachable Redis in a few seconds; workers pass a long
        `patience` so that a Redis restart delays their jobs but fails none."""
        return cls(connect(settings.redis_url, patience), settings.result_expires,
                   settings.max_attempts, settings.lease_seconds,
                   quick=connect(settings.redis_url, CLIENT_PATIENCE))

    def _end_keys(self, job_id: str, kind: str | None = None) -> list[str]:
        # the latency list is per kind; callers that know it save a round trip
        kind = kind or self.r.hget(job_key(job_id), "kind") or "unknown"
        return [job_key(job_id), lease_key(job_id), STATS, latency_key(kind)]

    # ------------------------------------------------------------ clients

    def create(self, job_id: str, kind: str, request: dict, submitter: str = "",
               digest: str = "") -> bool:
        """Record a new queued job; False (and nothing changed) when the id exists."""
        args = [job_id, kind, json.dumps(request), f"{time.time():.6f}", submitter, digest]
        return bool(self._create(keys=[job_key(job_id), queued_key(kind)], args=args))

    def get(self, job_id: str) -> Job | None:
        h = self.r.hgetall(job_key(job_id))
        return Job.from_hash(h) if h else None

    def get_many(self, job_ids: list[str]) -> list[Job | None]:
        with self.r.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(job_key(job_id))
            return [Job.from_hash(h) if h else None for h in pipe.execute()]

    def cancel(self, job_id: str) -> str:
        """Cancel a queued job now, or ask its worker to stop; returns the state it is in."""
        args = [f"{time.time():.6f}", self.result_expires]
        return self._cancel(keys=self._end_keys(job_id), args=args)

    def dead_letters(self) -> list[str]:
        return self.r.lrange(DEAD_LETTERS, 0, -1)

    # ------------------------------------------------------------ workers

    def claim(self, job_id: str, owner: str, worker: str = "", kind: str | None = None) -> Claim:
        keys = self._end_keys(job_id, kind) + [DEAD_LETTERS]
        args = [f"{time.time():.6f}", self.result_expires, owner, self.lease_ms, self.max_attempts, worker]
        status, attempts, *rest = self._claim(keys=keys, args=args)
        if status != "claimed":
            return Claim(status, int(attempts))
        request, run_alone = rest
        return Claim(status, int(attempts), json.loads(request), run_alone == "1")

    def finish(self, job_id: str, owner: str, state: str, result: dict | None = None,
               error: str = "", error_type: str = "", batch_size: int | None = None,
               kind: str | None = None) -> bool:
        """End a job this owner holds; False if it lost the job (its lease lapsed, someone took over)."""
        if state not in TERMINAL:
            raise ValueError(f"cannot finish a job as {state!r}")
        args = [f"{time.time():.6f}", self.result_expires, owner, state,
                json.dumps(result) if result is not None else "", error, error_type,
                "" if batch_size is None else batch_size]
        return bool(self._finish(keys=self._end_keys(job_id, kind), args=args))

    def refuse(self, job_id: str, error: str, error_type: str = "Refused") -> bool:
        """Fail a queued job whose message no worker may run (a pickle message, say)."""
        args = [f"{time.time():.6f}", self.result_expires, error, error_type]
        return bool(self._refuse(keys=self._end_keys(job_id), args=args))

    def release(self, job_id: str, owner: str) -> bool:
        return bool(self._release(keys=[job_key(job_id), lease_key(job_id)], args=[owner]))

    def renew(self, job_ids: list[str], owner: str) -> int:
        if not job_ids:
            return 0
        keys = [k for j in job_ids for k in (job_key(j), lease_key(j))]
        return self._renew(keys=keys, args=[owner, self.lease_ms])

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs their clients asked to cancel; none while Redis is away (the
        question is asked again, and a job's end is recorded only once Redis answers)."""
        try:
            with self.quick.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hget(job_key(job_id), "cancel_requested")
                flags = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            return set()
        return {j for j, flag in zip(job_ids, flags) if flag == "1"}

    def record_loss(self, job_id: str, reason: str) -> None:
        """Say why the last attempt was lost; the dead-letter message quotes it."""
        if self.r.exists(job_key(job_id)):
            self.r.hset(job_key(job_id), "last_loss", reason)
