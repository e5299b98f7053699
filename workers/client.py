"""`Client`: submit jobs, follow them, fetch results, cancel.

    client = Client()                                  # SPEECHQ_REDIS_URL, SPEECHQ_STORAGE
    job = client.submit_tts("The birch canoe slid on the smooth planks.")
    job = client.wait(job.id, timeout=60)
    job.state, job.result["audio_ref"], job.result["duration"]
    client.fetch_audio(job.id, "out.wav")             # the wav, from wherever the storage is

    job = client.submit_asr("speech.wav")              # uploaded into the storage
    client.wait(job.id).result["text"]

A job id may be chosen by the caller: submitting the same request again under its id returns
that job and starts nothing new, so a retried submission never runs twice. An id is its first
submitter's: another submitter's attempt, or a different request under it, is a `JobIdConflict`.
Inputs are checked here against the service's limits (text length; an audio file's size and,
from its header, its duration and decoded size) before anything is copied or queued.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from pathlib import Path

import redis

from pipeline.inference.options import RecognitionOptions, TTSOptions, requested
from pipeline.frontend.header import AudioLimits, inspect_audio
from pipeline.frontend.text import check_text
from workers.jobs import QUEUED, TERMINAL, Job, JobStore, done_channel, request_digest
from workers.settings import KINDS, Settings, task_name
from workers.storage import LocalStorage, StorageError, open_storage

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class JobNotFound(KeyError):
    def __str__(self) -> str:
        return f"no job {self.args[0]!r} (never submitted, or its record expired)"


class JobIdConflict(ValueError):
    """The id is taken by another submitter, or was used for a different request."""


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

    def submit(self, kind: str, request: dict, job_id: str | None = None, submitter: str = "",
               digest: str | None = None) -> Job:
        """Queue a job, or return the job already under this id when `submitter` sent the same
        request (`digest`, by default the request's own) before."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}; one of {KINDS}")
        job_id = _check_id(job_id or uuid.uuid4().hex)
        digest = digest or request_digest(kind, request)
        if self.store.create(job_id, kind, request, submitter, digest):
            self.app.send_task(task_name(kind), args=[job_id], task_id=job_id)
            return Job(job_id, kind, QUEUED, request, submitted_at=time.time(),
                       submitter=submitter, digest=digest)
        job = self._resubmitted(job_id, kind, submitter, digest)
        if job.state == QUEUED:
            # a resubmitted queued job is sent again: if the first send was lost, this one
            # runs it; if not, the second message finds the job claimed or ended and does nothing
            self.app.send_task(task_name(kind), args=[job_id], task_id=job_id)
        return job

    def _resubmitted(self, job_id: str, kind: str, submitter: str, digest: str) -> Job:
        """The existing job under `job_id`, if this is a retry of its submission."""
        job = self.store.get(job_id)
        if job is None or job.submitter != submitter:
            # the same words whether the id is free again, or another's: nothing about it leaks
            raise JobIdConflict(f"the job id {job_id!r} cannot be used; choose another")
        if job.kind != kind or (job.digest and job.digest != digest):
            raise JobIdConflict(f"job {job_id} was submitted with a different request; "
                                "send the same request to retry it, or choose another id")
        return job

    def submit_tts(self, text: str, job_id: str | None = None, submitter: str = "",
                   **options) -> Job:
        """`options`: TTSOptions fields (decoder, attention, speed, voice, format,
        sample_rate); those left out or None are the worker's defaults."""
        text = check_text(text, self.settings.max_text_chars)
        return self.submit("tts", {"text": text, "options": requested(TTSOptions, options)},
                           job_id, submitter)

    def submit_asr(self, audio: str | os.PathLike, job_id: str | None = None,
                   name: str | None = None, submitter: str = "", **options) -> Job:
        """`audio` is uploaded into the storage unless it is already inside a local storage
        directory; a name that is no local file may be a stored file's reference
        (`outputs/<id>.wav`) or full location, used where it is. `options`:
        RecognitionOptions fields (decoder, beam_size, weights, views, hotwords=["okonkwo",
        "new york"], ...); those left out or None are the worker's recogniser's defaults.

        A local file is checked first (size, and from its header duration and decoded size)."""
        chosen = requested(RecognitionOptions, options)
        job_id = _check_id(job_id or uuid.uuid4().hex)
        local = Path(audio).is_file()
        if local:
            self.check_audio(audio)
        digest = request_digest("asr", {"audio": _content_digest(audio) if local else str(audio),
                                        "options": chosen})
        existing = self.store.get(job_id)
        if existing is not None:
            job = self._resubmitted(job_id, "asr", submitter, digest)
            return self.submit("asr", job.request, job_id, submitter, digest)
        # a key of its own per submission: a racing submission under the same id cannot
        # replace the audio of the job that wins the id
        key = f"{job_id}.{uuid.uuid4().hex[:12]}"
        ref = self.storage.put_file(audio, key)
        request = {"audio": ref, "name": name or str(audio), "options": chosen}
        try:
            return self.submit("asr", request, job_id, submitter, digest)
        except JobIdConflict:
            if ref.startswith(f"inputs/{key}."):
                self.storage.delete(ref)
            raise

    def check_audio(self, path: str | os.PathLike) -> None:
        """The checks the gateway makes of an upload: size, then the header (no decoding)."""
        limit = self.settings.max_upload_mb
        size = os.path.getsize(path)
        if size > limit * 2**20:
            raise ValueError(f"{path}: {size / 2**20:.1f} MB is larger than the limit of "
                             f"{limit:g} MB (SPEECHQ_MAX_UPLOAD_MB)")
        inspect_audio(path, AudioLimits())

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


def _check_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise ValueError(f"job id {job_id!r}: use 1-128 letters, digits and _.:-")
    return job_id


def _content_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
