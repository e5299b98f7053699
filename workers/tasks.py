"""The Celery tasks: thin wrappers that hand a job id to this process's `JobRunner`.

A task message carries only the job id; the request (text, or the audio's storage path) is in
the job record. The runner, with its models, is made on the first task a pool process runs,
so nothing heavy happens in the parent and CUDA is first touched after fork. A task ends as its
job did (workers.events.report): SUCCESS, FAILURE (`JobFailed`) or REVOKED (cancelled).
"""

from __future__ import annotations

import logging
import os
import time

from celery import signals
from celery.exceptions import WorkerLostError
from celery.worker.request import Request

from workers.app import app
from workers.batching import refusal
from workers.events import JobFailed, report
from workers.settings import task_name

log = logging.getLogger(__name__)

_runner = None  # this process's JobRunner
_heartbeat = None  # the main process's monitoring.Heartbeat


def runner():
    global _runner
    if _runner is None:
        from workers.runner import JobRunner

        _runner = JobRunner(app, app.speechq_settings)
    return _runner


class JobRequest(Request):
    """Celery's request, plus a note in the job record when its process is lost.

    A hard time limit acks the message, so the job is sent again (same id): its next claim
    counts an attempt, and a job that always runs over ends in the dead-letter list.
    """

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft:
            return
        try:
            _store().record_loss(self.id, f"its worker process was killed at the hard time limit ({timeout:g} s)")
            app.send_task(self.task_name, args=self.args, task_id=self.id)
        except Exception:
            log.exception("could not requeue job %s after its hard time limit", self.id)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False) -> None:
        if isinstance(exc_info.exception, WorkerLostError):
            try:
                _store().record_loss(self.id, f"its worker process died ({exc_info.exception})")
            except Exception:
                log.exception("could not record the loss of job %s", self.id)
        super().on_failure(exc_info, send_failed_event, return_ok)


_main_store = None


def _store():
    global _main_store
    if _main_store is None:
        from workers.jobs import JobStore

        settings = app.speechq_settings
        _main_store = JobStore.from_settings(settings, settings.redis_patience)
    return _main_store


@app.task(name="speechq.tts", bind=True, Request=JobRequest, throws=(JobFailed,))
def tts(self, job_id: str) -> dict:
    return report(self, runner().run("tts", job_id, self.request.hostname), runner().store)


@app.task(name="speechq.asr", bind=True, Request=JobRequest, throws=(JobFailed,))
def asr(self, job_id: str) -> dict:
    return report(self, runner().run("asr", job_id, self.request.hostname), runner().store)


@signals.task_rejected.connect
def _refused(message=None, exc=None, **_) -> None:
    """A message the consumer would not decode (pickle, say): its job fails with the reason."""
    headers = getattr(message, "headers", None) or {}
    if headers.get("task") not in app.tasks or not headers.get("id"):
        return
    reason = (refusal(message.content_type) if message.content_type != "application/json"
              else f"refused: {exc}")
    try:
        _store().refuse(headers["id"], reason)
    except Exception:
        log.exception("could not fail refused job %s", headers.get("id"))


@signals.worker_process_init.connect
def _init_process(**_) -> None:
    global _runner, _main_store
    _runner = _main_store = None  # never share the parent's connections
    settings = app.speechq_settings
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    for kind in filter(None, settings.preload.split(",")):
        try:  # so the first job does not pay for it; a model that fails here fails its jobs later
            runner().engines.model(kind)
        except Exception:
            log.exception("could not preload the %s model", kind)


@signals.worker_ready.connect
def _start_monitoring(sender=None, **_) -> None:
    """In the main process once the pool is up: heartbeat with the fleet's upkeep (the reaper),
    and the Prometheus endpoint."""
    global _heartbeat
    from workers import monitoring
    from workers.reaper import Reaper
    from workers.settings import QUEUES
    from workers.storage import open_storage

    settings = app.speechq_settings
    r = _store().r
    port = 0
    if settings.metrics_port >= 0:
        try:
            port = monitoring.start_metrics_server(r, sender.hostname, settings.metrics_port,
                                                   settings.metrics_addr)
            log.info("Prometheus metrics on %s:%d", settings.metrics_addr, port)
        except OSError as e:  # monitoring never stops a worker from serving
            log.error("no Prometheus endpoint: %s", e)
    consumer_queues = getattr(sender.task_consumer, "queues", None) or []
    info = {"device": settings.device, "pid": os.getpid(),
            "queues": ",".join(sorted(q.name for q in consumer_queues)),
            "concurrency": getattr(sender.pool, "num_processes", 0) or 0,
            "metrics_port": port, "started": f"{time.time():.3f}"}
    reaper = Reaper(r, QUEUES, settings.lease_seconds, settings.worker_expires,
                    open_storage(settings), resend=_resend)
    _heartbeat = monitoring.Heartbeat(r, sender.hostname, info, settings.upkeep_interval,
                                      settings.worker_expires,
                                      lambda: reaper.run_once(settings.upkeep_interval,
                                                              sender.hostname)).start()


def _resend(kind: str, job_id: str) -> None:
    app.send_task(task_name(kind), args=[job_id], task_id=job_id)


@signals.worker_shutdown.connect
def _stop_monitoring(**_) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
