"""The job loop of one worker process: claim the delivered job, collect a batch of waiting ones,
run it, record each job's end, and ack its message only then.

One `JobRunner` per process (created after fork, on the first task), holding the models, the
Redis connection and the broker puller.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded

from workers import monitoring
from workers.batching import BatchLimits, Pulled, Puller, collect
from workers.cancellation import CancelWatch
from workers.engines import Engines, Work, error_message
from workers.events import TaskEvents
from workers.jobs import CANCELLED, FAILED, SUCCEEDED, Claim, JobStore
from workers.settings import Settings, task_name

log = logging.getLogger(__name__)


@dataclass
class Member:
    """A claimed job of the batch being formed; `pulled` is None for the one Celery delivered."""

    job_id: str
    claim: Claim
    pulled: Pulled | None = None


class LeaseKeeper:
    """Renews the leases of the jobs a batch holds, from a thread, while the batch runs."""

    def __init__(self, store: JobStore, owner: str, job_ids: list[str], every: float):
        self.store, self.owner, self.job_ids, self.every = store, owner, job_ids, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.store.renew(self.job_ids, self.owner)
            except Exception as e:  # Redis restarting: try again next tick
                log.warning("could not renew leases: %s", e)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class JobRunner:
    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings
        self.store = JobStore.from_settings(settings, settings.redis_patience)
        self.engines = Engines(settings)
        self.puller = Puller(self.store.r)
        self.limits = {
            "asr": BatchLimits(settings.max_batch_size, settings.max_batch_audio_seconds,
                               settings.batch_wait_ms / 1000),
            "tts": BatchLimits(settings.max_batch_size, settings.max_batch_text_chars,
                               settings.batch_wait_ms / 1000),
        }

    # ------------------------------------------------------------ entry point (one Celery task)

    def run(self, kind: str, job_id: str, hostname: str) -> dict:
        owner = f"{hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        claim = self._claim(job_id, owner, hostname, kind)
        if not claim.claimed:
            return {"id": job_id, "outcome": claim.status}
        batch, alone, taken = [Member(job_id, claim)], [], []
        events = TaskEvents(self.app, hostname, kind)  # for the jobs Celery did not deliver
        try:
            if claim.batchable and self.settings.max_batch_size > 1:
                more, alone = collect(lambda: self._take(kind, owner, hostname, taken),
                                      lambda m: self._cost(kind, m),
                                      self.engines.cost(kind, claim.request), self.limits[kind])
                batch += more
            outcomes = self._process(kind, batch, owner, hostname, events)
            for m in alone:  # retried or split jobs run on their own: one cannot take others down
                if m.claim.status == "busy":
                    m.claim = self._claim(m.job_id, owner, hostname, kind)
                if m.claim.claimed:
                    outcomes.update(self._process(kind, [m], owner, hostname, events))
                self.puller.ack(m.pulled)
        except SoftTimeLimitExceeded:
            raise
        except Exception as e:  # a bug here must not leave claimed jobs running forever
            log.exception("%s batch of job %s failed", kind, job_id)
            error = f"internal error: {type(e).__name__}: {e}"
            for m in batch[:1] + taken:
                self.store.finish(m.job_id, owner, FAILED, None, error, "InternalError", kind=kind)
                if m.pulled is not None:
                    events.ended(m.job_id, FAILED, error)
                    self.puller.ack(m.pulled)
            return {"id": job_id, "outcome": FAILED}
        return {"id": job_id, "outcome": outcomes.get(job_id), "batch_size": len(batch)}

    def _claim(self, job_id: str, owner: str, hostname: str, kind: str, wait: bool = True) -> Claim:
        """Claim a job; a job another process holds is waited for until its lease lapses
        (that process died) or it ends (a duplicate message)."""
        claim = self.store.claim(job_id, owner, hostname, kind)
        deadline = time.monotonic() + 3 * self.settings.lease_seconds
        while wait and claim.status == "busy" and time.monotonic() < deadline:
            time.sleep(min(0.5, self.settings.lease_seconds / 4))
            claim = self.store.claim(job_id, owner, hostname, kind)
        return claim

    def _take(self, kind: str, owner: str, hostname: str, taken: list[Member]) -> Member | None:
        """The next waiting job, claimed (and added to `taken`, so a failure can end it);
        jobs that need nothing more are acked and skipped."""
        while (pulled := self.puller.get(kind, self.store.refuse)) is not None:
            claim = self.store.claim(pulled.job_id, owner, hostname, kind)
            if claim.claimed or claim.status == "busy":
                member = Member(pulled.job_id, claim, pulled)
                taken.append(member)
                return member
            self.puller.ack(pulled)  # ended, cancelled, dead-lettered or unknown
        return None

    def _cost(self, kind: str, m: Member) -> float | None:
        if not m.claim.batchable:
            return None  # busy, lost once already, or split from a batch: runs alone
        return self.engines.cost(kind, m.claim.request)

    # ------------------------------------------------------------ one batch

    def _process(self, kind: str, members: list[Member], owner: str, hostname: str,
                 events: TaskEvents) -> dict:
        ids = [m.job_id for m in members]
        events.started([m.job_id for m in members if m.pulled is not None])
        works = {m.job_id: Work(m.job_id, m.claim.request or {}) for m in members}
        ended: dict[str, str] = {}
        started = time.perf_counter()
        stats = monitoring.ProcessStats(self.store.r, hostname, self.settings.device)
        stats.set_active(len(members))
        try:
            with LeaseKeeper(self.store, owner, ids, self.settings.lease_seconds / 3):
                self._compute(kind, works, ids)
                for m in members:
                    ended[m.job_id] = self._end(kind, works[m.job_id], owner, len(members),
                                                events if m.pulled is not None else None)
                    if m.pulled is not None:
                        self.puller.ack(m.pulled)
        except SoftTimeLimitExceeded:
            self._on_soft_limit(kind, members, ended, owner, events)
        finally:
            busy = time.perf_counter() - started
            audio = sum(w.audio_seconds for w in works.values() if w.ok)
            stats.record_batch(kind, list(ended.values()), audio, busy)
        return ended

    def _compute(self, kind: str, works: dict[str, Work], ids: list[str]) -> None:
        """Run the batch's model call; a job cancelled before or while it runs stops its share of
        the work within `CancelWatch.every` seconds and is marked `extra["cancelled"]`."""
        cancel = CancelWatch(self.store.cancel_requested, ids)
        cancelled = cancel.poll(now=True)
        todo = [w for j, w in works.items() if j not in cancelled]
        for w in todo:
            self.engines.prepare(kind, w)
        self._test_hooks(todo, cancel)
        try:
            self.engines.run(kind, [w for w in todo if w.ok], cancel)
        except SoftTimeLimitExceeded:
            raise
        except Exception as e:  # a bug or a broken model: every job says so, none is lost
            log.exception("a %s batch failed", kind)
            for w in todo:
                if w.ok:
                    w.error = RuntimeError(f"internal error: {type(e).__name__}: {e}")
        for j in cancel.poll(now=True):
            works[j].extra["cancelled"] = True

    def _end(self, kind: str, w: Work, owner: str, batch_size: int,
             events: TaskEvents | None = None) -> str:
        """Record a job's end (and send its task event, for a job Celery did not deliver)."""
        if w.extra.get("cancelled"):
            state, error = CANCELLED, "cancelled while running"
        elif w.ok:
            try:
                self.engines.write(kind, w)
                state, error = SUCCEEDED, ""
            except OSError as e:
                state, error = FAILED, f"could not store the output: {e}"
        else:
            state, error = FAILED, error_message(w.error)
        error_type = {SUCCEEDED: "", CANCELLED: "Cancelled"}.get(
            state, type(w.error).__name__ if w.error else "StorageError")
        if not self.store.finish(w.job_id, owner, state, w.result, error, error_type, batch_size, kind):
            log.warning("job %s was taken over by another worker; dropping this result", w.job_id)
            state, error = "lost", "taken over by another worker"
        if events is not None:
            events.ended(w.job_id, state, error, w.result)
        return state

    def _on_soft_limit(self, kind: str, members: list[Member], ended: dict, owner: str,
                       events: TaskEvents) -> None:
        """Over the soft limit: a lone job fails; the jobs of a batch go back to the queue, each
        to run alone next time (see `Claim.batchable`), where one that is slow by itself fails."""
        limit = self.settings.soft_time_limit
        for m in members:
            if m.job_id in ended:
                continue
            if len(members) == 1:
                self.store.finish(m.job_id, owner, FAILED, None,
                                  f"the job took longer than the time limit of {limit:g} s",
                                  "TimeLimitExceeded", 1, kind)
                ended[m.job_id] = FAILED
            elif self.store.release(m.job_id, owner):
                self.app.send_task(task_name(kind), args=[m.job_id], task_id=m.job_id)
                ended[m.job_id] = "requeued"
            if m.pulled is not None:
                events.ended(m.job_id, ended.get(m.job_id, "lost"), "over the soft time limit")
                self.puller.ack(m.pulled)

    def _test_hooks(self, works: list[Work], cancel: CancelWatch) -> None:
        """Fault injection for the tests (`SPEECHQ_TEST_HOOKS=1` only)."""
        if not self.settings.test_hooks:
            return
        for w in works:
            hooks = w.request.get("_test") or {}
            if hooks.get("sleep"):  # stands for model work: a cancel ends it
                end = time.monotonic() + float(hooks["sleep"])
                while time.monotonic() < end and w.job_id not in cancel.poll():
                    time.sleep(min(0.05, max(0.0, end - time.monotonic())))
            if hooks.get("hang"):  # ignores the soft limit: only the hard limit ends it
                end = time.monotonic() + float(hooks["hang"])
                while time.monotonic() < end:
                    try:
                        time.sleep(0.1)
                    except SoftTimeLimitExceeded:
                        pass
            if hooks.get("crash"):
                os.kill(os.getpid(), signal.SIGKILL)
