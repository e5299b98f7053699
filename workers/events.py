"""What Celery's task events (and so Flower) say about our jobs.

A job taken into a dynamic batch straight from the broker (workers.batching) never passes
Celery's consumer: nothing would tell Flower about it. `TaskEvents` sends, from the pool process,
the events a worker sends for a task it runs: task-received and task-started, then
task-succeeded with its runtime, task-failed or task-revoked, with the job id as the task's uuid
and `speechq.asr` / `speechq.tts` as its name. Events are best effort: one that cannot be sent
is logged and the batch sends no more, and a job never fails because of it.

The job Celery delivered is ended by its task (`report`): a succeeded job returns; a failed one
raises `JobFailed`, which Celery records as FAILURE (task-failed; an expected error in the
tasks' `throws`, so logged without a traceback) and acks; a cancelled one sends task-revoked and
raises `Ignore`, on which Celery's trace stores nothing, sends no event and acks the message.
The job record stays the source of truth either way.
"""

from __future__ import annotations

import logging
import time

from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.utils.saferepr import saferepr

from workers.jobs import CANCELLED, FAILED, SUCCEEDED
from workers.settings import task_name

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """A job ended failed (bad input, a broken model, the time limit): its task fails with it."""


class TaskEvents:
    """The task events of the jobs one process runs outside Celery's consumer."""

    def __init__(self, app, hostname: str, kind: str):
        self.app, self.hostname, self.name = app, hostname, task_name(kind)
        self._started: dict[str, float] = {}
        self._broken = False  # the broker refused once: not again for this batch

    def started(self, job_ids: list[str]) -> None:
        """task-received and task-started for jobs a batch took from the broker."""
        now = time.time()
        events = []
        for job_id in job_ids:
            self._started[job_id] = now
            received = {"name": self.name, "args": saferepr([job_id]), "kwargs": "{}",
                        "retries": 0, "root_id": job_id, "parent_id": None, "eta": None,
                        "expires": None}  # the fields Celery's consumer sends
            events += [("task-received", job_id, received), ("task-started", job_id, {})]
        self._send(events)

    def ended(self, job_id: str, state: str, error: str = "", result: object = None) -> None:
        """The event for a job's end: `state` succeeded, failed or cancelled (others, such as a
        job handed back to the queue, send task-retried: it runs again under the same id)."""
        runtime = time.time() - self._started.pop(job_id, time.time())
        if state == SUCCEEDED:
            event = ("task-succeeded", job_id, {"result": saferepr(result), "runtime": runtime})
        elif state == FAILED:
            event = ("task-failed", job_id, {"exception": repr(JobFailed(error)), "traceback": ""})
        elif state == CANCELLED:
            event = ("task-revoked", job_id, {"terminated": False, "signum": None, "expired": False})
        else:
            event = ("task-retried", job_id, {"exception": repr(f"{state}: {error}"),
                                              "traceback": ""})
        self._send([event])

    def _send(self, events: list[tuple[str, str, dict]]) -> None:
        if self._broken or not events:
            return
        try:
            with self.app.events.default_dispatcher(hostname=self.hostname) as dispatcher:
                for type_, job_id, fields in events:
                    dispatcher.send(type_, uuid=job_id, **fields)
        except SoftTimeLimitExceeded:  # the runner's to handle, like any part of the job
            raise
        except Exception as e:  # the broker away: Flower misses these, the jobs go on
            self._broken = True
            log.warning("could not send task events (%s): %s", events[0][0], e)


def report(task, outcome: dict, store) -> dict:
    """End the Celery task of the job it delivered as the job ended: return for a success (or
    a job that needs nothing more), raise `JobFailed` for a failure, `Ignore` after a
    task-revoked event for a cancelled job."""
    state = outcome.get("outcome")
    if state in (FAILED, "dead"):  # dead: failed into the dead-letter list at its claim
        job = store.get(outcome["id"])
        raise JobFailed(job.error if job and job.error else "the job failed")
    if state == CANCELLED:
        req = task.request
        try:
            task.send_event("task-revoked", retry=False, terminated=False, signum=None,
                            expired=False)
            task.backend.mark_as_revoked(req.id, "cancelled", request=req)
        except Exception as e:
            log.warning("could not report job %s as revoked: %s", req.id, e)
        raise Ignore(f"job {req.id} was cancelled")
    return outcome

