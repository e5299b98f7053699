"""`Client`: submit jobs, follow them, fetch results, cancel.

    client = Client()                                  # SPEECHQ_REDIS_URL, SPEECHQ_STORAGE
    job = client.submit_tts("The birch canoe slid on the smooth planks.")
    job = client.wait(job.id, timeout=60)
    job.state, job.result["audio_ref"], job.result["duration"]
    client.fetch_audio(job.id, "out.wav")             # the wav, from wherever the storage is

    job = client.submit_asr("speech.wav")              # uploaded into the storage
    client.wait(job.id).result["text"]

A job id may be chosen by the caller: submitting an id that exists returns that job and
starts nothing new, so a retried submission never runs twice.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import redis

from pipeline.inference.options import RecognitionOptions, TTSOptions, requested
from workers.jobs import QUEUED, TERMINAL, Job, JobStore, done_channel
from workers.settings import KINDS, Settings, task_name
from workers.storage import LocalStorage, StorageError, open_storage

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class JobNotFound(KeyError):
    def __str__(self) -> str:
        return f"no job {self.args[0]!r} (never submitted, or its record expired)"


class Client:
    def __init__(self, settings: Settings | None = None, app=None):
        self.settings = settings or Settings.from_env()
        self.store = JobStore.from_settings(self.settings)
        self.storage = open_storage(self.settings)
        self._app = app

    @property
    def app(self):
        if self._app is None:
            from workers.app import app, create_app

            self._app = app if app.speechq_settings == self.settings else create_app(self.settings)
        return self._app

    # ------------------------------------------------------------ submitting

    def submit(self, kind: str, request: dict, job_id: str | None = None) -> Job:
        """Queue a job (or return the existing job with this id)."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}; one of {KINDS}")
        job_id = job_id or uuid.uuid4().hex
        if not JOB_ID.match(job_id):
            raise ValueError(f"job id {job_id!r}: use 1-128 letters, digits and _.:-")
        if self.store.create(job_id, kind, request):
            self.app.send_task(task_name(kind), args=[job_id], task_id=job_id)
            return Job(job_id, kind, QUEUED, request, submitted_at=time.time())
        job = self.store.get(job_id)
        if job.kind != kind:
            raise ValueError(f"job {job_id} exists and is a {job.kind} job")
        if job.state == QUEUED:
            # a resubmitted queued job is sent again: if the first send was lost, this one
            # runs it; if not, the second message finds the job claimed or ended and does nothing
            self.app.send_task(task_name(kind), args=[job_id], task_id=job_id)
        return job

    def submit_tts(self, text: str, job_id: str | None = None, **options) -> Job:
        """`options`: TTSOptions fields (decoder, attention, speed, voice, format,
        sample_rate); those left out or None are the worker's defaults."""
        return self.submit("tts", {"text": text, "options": requested(TTSOptions, options)},
                           job_id)

    def submit_asr(self, audio: str | os.PathLike, job_id: str | None = None,
                   name: str | None = None, **options) -> Job:
        """`audio` is uploaded into the storage unless it is already inside a local storage
        directory; a name that is no local file may be a stored file's reference
        (`outputs/<id>.wav`) or full location, used where it is. `options`:
        RecognitionOptions fields (decoder, beam_size, weights, views, hotwords=["okonkwo",
        "new york"], ...); those left out or None are the worker's recogniser's defaults."""
        chosen = requested(RecognitionOptions, options)
        job_id = job_id or uuid.uuid4().hex
        existing = self.store.get(job_id)
        if existing is not None:
            return self.submit("asr", existing.request, job_id)
        ref = self.storage.put_file(audio, job_id)
        request = {"audio": ref, "name": name or str(audio), "options": chosen}
        return self.submit("asr", request, job_id)

    # ------------------------------------------------------------ following

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def get_many(self, job_ids: list[str]) -> list[Job | None]:
        return self.store.get_many(job_ids)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has ended (or `timeout` seconds pass); returns it either way. A
        Redis restart meanwhile is waited out; one that outlasts `timeout` raises its error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self.store.r.pubsub(ignore_subscribe_messages=True)
        job = None
        try:
            try:
                pubsub.subscribe(done_channel(job_id))
            except redis.ConnectionError:
                pass  # polled below until Redis is back
            while True:
                try:
                    job = self.get(job_id)  # after subscribing, so the end cannot slip between
                except (redis.ConnectionError, redis.TimeoutError):
                    if job is None or (deadline is not None and time.monotonic() >= deadline):
                        raise
                    time.sleep(0.5)
                    pubsub = self._resubscribe(pubsub, job_id)
                    continue
                if job.state in TERMINAL:
                    return job
                left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if left <= 0:
                    return job
                try:
                    pubsub.get_message(timeout=left)
                except redis.ConnectionError:
                    time.sleep(min(left, 0.5))  # Redis restarting: poll until it is back
                    pubsub = self._resubscribe(pubsub, job_id)
        finally:
            pubsub.close()

    def _resubscribe(self, pubsub, job_id: str):
        pubsub.close()
        pubsub = self.store.r.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(done_channel(job_id))
        except redis.ConnectionError:
            pass
        return pubsub

    def result(self, job_id: str) -> dict:
        job = self.get(job_id)
        if job.state != "succeeded":
            raise RuntimeError(f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
        return job.result

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once; a running job stops at its next check."""
        if self.store.cancel(job_id) == "missing":
            raise JobNotFound(job_id)
        return self.get(job_id)

    def fetch_audio(self, job_id: str, dst: str | os.PathLike) -> Path:
        """Copy a finished TTS job's wav to the local file `dst`."""
        job = self.get(job_id)
        if job.kind != "tts":
            raise ValueError(f"job {job_id} is an {job.kind} job: it has no audio output")
        return self.storage.copy_out(self.result(job_id)["audio_ref"], dst)

    def audio_path(self, job: Job) -> Path:
        """Where a TTS job's wav is on this machine, for a local storage directory (which may be
        mounted elsewhere on other machines); `fetch_audio` works with any storage."""
        if not isinstance(self.storage, LocalStorage):
            raise StorageError(f"the storage {self.storage.location} has no local paths: "
                               "use fetch_audio")
        return self.storage.resolve(job.result["audio_ref"])

    def dead_letters(self) -> list[str]:
        return self.store.dead_letters()

    def ping(self) -> bool:
        try:
            return bool(self.store.r.ping())
        except redis.RedisError:
            return False
