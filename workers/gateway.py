"""The HTTP gateway: the job API for clients in any language (FastAPI; OpenAPI at /docs).

    speechq serve --port 8000
    curl -X POST localhost:8000/v1/jobs/tts -H 'content-type: application/json' -d '{"text": "Hi."}'
    curl -X POST localhost:8000/v1/jobs/asr -H 'content-type: audio/wav' --data-binary @speech.wav
    curl localhost:8000/v1/jobs/ID;  curl -o out.wav localhost:8000/v1/jobs/ID/audio
    curl -X POST 'localhost:8000/v1/jobs/tts?wait=30' -H 'content-type: application/json' -d '{"text": "Hi."}'
    curl 'localhost:8000/v1/jobs/ID/transcript?format=srt';  curl -X DELETE localhost:8000/v1/jobs/ID

Uploads are checked (size before reading, then the audio header against the limits, with no
decoding: the worker decodes, and a bad file is a failed job) before anything enters the storage
(a directory or an object store: `workers.storage`); audio downloads stream from it. With
`?wait=SECONDS` a submission answers with the finished job when it ends in time (200), and with
its id otherwise (202). OpenAI's audio API is served beside the job API (`workers.openai_api`).

With tokens configured (`workers.auth`), every call but the liveness probes `/v1/live` and
`/health` needs `Authorization: Bearer <token>`; each job is its submitter's, and another token
(not an admin) finds no such job. Job JSON names no server path or host: outputs are URLs of this
gateway. Slow and piled-up clients are bounded by `workers.http_limits`.
"""

from __future__ import annotations

import os
import tempfile
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from pipeline.frontend.header import AudioError, AudioLimits, inspect_audio
from pipeline.frontend.text import TextError, check_text
from pipeline.frontend.codecs import MEDIA_TYPES as AUDIO_MEDIA_TYPES
from pipeline.inference.formats import FORMATS, MEDIA_TYPES, render
from pipeline.inference.options import RecognitionOptions, TTSOptions, default_of, job_fields, spec
from workers import auth
from workers.auth import Identity, require
from workers.client import Client, JobIdConflict, JobNotFound
from workers.http_limits import BodyDeadline, UploadSlots
from workers.jobs import TERMINAL
from workers.openai_api import openai_router
from workers.settings import Settings
from workers.storage import StorageError, StorageUnavailable
from workers.waiting import job_ends

UPLOAD_SUFFIXES = {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/flac": ".flac",
                   "audio/x-flac": ".flac", "audio/ogg": ".ogg", "audio/mpeg": ".mp3", "audio/mp3": ".mp3"}
CHUNK = 1 << 16
MAX_WAIT_SECONDS = 600
_JOB_ID = Field(None, description="job id; resubmitting the same request under it returns that job")
_WAIT = Query(None, ge=0, le=MAX_WAIT_SECONDS, description="answer with the finished job if it "
              "ends within this many seconds (200), else with its id (202)")


def options_model(name: str, cls: type, **more) -> type[BaseModel]:
    """A request model with one optional field per job option of `cls` (its range and help,
    its default in the description) and `more`; unknown names are refused. A list option is
    an array of strings: in a JSON body a list, in a query the parameter repeated
    (`?hotwords=okonkwo&hotwords=new%20york`), OpenAPI's own form for arrays, so an item may
    hold a comma."""
    fields = {}
    for f in job_fields(cls):
        s = spec(f)
        kind = Literal[s.choices] if s.choices is not None else s.kind
        limits = {"ge": s.low} if s.low is not None else {}
        if s.high is not None:
            limits["lt" if s.high_open else "le"] = s.high
        if s.kind is tuple:
            item = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                    max_length=s.max_chars)]
            kind, limits = list[item], {"max_length": s.max_items}
        shown = default_of(f) if s.kind is not tuple else "none"
        default = "" if default_of(f) is None else f" (default: {shown})"
        fields[f.name] = (kind | None, Field(None, description=s.help + default, **limits))
    return create_model(name, __config__=ConfigDict(extra="forbid"), **more, **fields)


TTSJob = options_model("TTSJob", TTSOptions,
                       text=(str, Field(description="what to say (the length limit is "
                                                    "SPEECHQ_MAX_TEXT_CHARS)")),
                       id=(str | None, _JOB_ID))
ASRQuery = options_model("ASRQuery", RecognitionOptions, id=(str | None, _JOB_ID),
                         wait=(float | None, Field(None, ge=0, le=MAX_WAIT_SECONDS,
                                                   description=_WAIT.description)))


class JobCreated(BaseModel):
    id: str
    state: str


def _answer_outages(app: FastAPI, redis_url: str) -> None:
    """Redis unreachable: a 503 naming it, in the client's few seconds of patience, not a 500. The
    gateway's connections reconnect by themselves when Redis is back."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError, TimeoutError

    from workers.jobs import unreachable

    async def outage(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"detail": unreachable(redis_url, e)}, status_code=503)

    for error in (ConnectionError, TimeoutError, OperationalError):
        app.add_exception_handler(error, outage)


def create_gateway(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    client = Client(settings)
    max_bytes = int(settings.max_upload_mb * 2**20)
    uploads = UploadSlots(settings.max_concurrent_uploads)
    app = FastAPI(title="speechq", description="TTS and ASR jobs over a Celery queue", version="0.1.0",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyDeadline, body_timeout=settings.gateway_body_timeout,
                       read_timeout=settings.gateway_read_timeout)
    auth.install(app, settings)
    _answer_outages(app, settings.redis_url)
    if settings.gateway_docs:
        _add_docs(app)

    def job_or_404(job_id: str, who: Identity):
        """Another submitter's job is as absent as one that never was."""
        try:
            job = client.get(job_id)
        except JobNotFound as e:
            raise HTTPException(404, str(e)) from None
        if not who.owns(job.submitter):
            raise HTTPException(404, str(JobNotFound(job_id)))
        return job

    def view(job) -> dict:
        """A job as its owner sees it: references and URLs, no storage locations, no worker
        hosts."""
        d = job.to_dict()
        d.pop("worker", None)
        d["submitter"] = job.submitter
        if d.get("result"):
            d["result"] = {k: v for k, v in d["result"].items() if k != "audio"}
        if d.get("request"):
            d["request"] = {k: v for k, v in d["request"].items() if k != "name"}
        if d.get("error"):
            d["error"] = d["error"].replace(settings.storage.rstrip("/") + "/", "")
        if job.kind == "tts" and job.state == "succeeded":
            d["audio_url"] = f"/v1/jobs/{job.id}/audio"
        if job.kind == "asr" and job.state == "succeeded":
            d["transcript_url"] = f"/v1/jobs/{job.id}/transcript"
        return d

    async def created(job, wait: float | None):
        """202 with the id, or with `wait`, the job once it ends within it (200)."""
        if wait:
            job = await job_ends(settings.redis_url).wait(job.id, wait) or job
            if job.state in TERMINAL:
                return JSONResponse(view(job), status_code=200)
        return JSONResponse(JobCreated(id=job.id, state=job.state).model_dump(), status_code=202)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/v1/live")
    @app.get("/health", include_in_schema=False)
    def live() -> dict:
        """Liveness: the process answers. Needs no token and says nothing else."""
        return {"status": "ok"}

    @app.get("/v1/health")
    def health(who: Identity = Depends(require("read"))) -> dict:
        from workers import monitoring

        if not client.ping():
            raise HTTPException(503, "Redis is unreachable")
        snap = monitoring.snapshot(client.store.r)
        online = sum(1 for w in snap["workers"] if w["online"])
        return {"status": "ok" if online else "no workers", "redis": True, "workers_online": online,
                "queues": snap["queues"]}

    @app.post("/v1/jobs/tts", status_code=202, response_model=JobCreated,
              responses={200: {"description": "the finished job (with ?wait=)"}})
    async def submit_tts(body: TTSJob, wait: float | None = _WAIT,
                         who: Identity = Depends(require("submit"))):
        try:
            text = check_text(body.text, settings.max_text_chars)
            options = body.model_dump(exclude_none=True, exclude={"text", "id"})
            job = await run_in_threadpool(partial(client.submit_tts, text, job_id=body.id,
                                                  submitter=who.name, **options))
        except JobIdConflict as e:
            raise HTTPException(409, str(e)) from None
        except (TextError, ValueError) as e:
            raise HTTPException(422, str(e)) from None
        return await created(job, wait)

    @app.post("/v1/jobs/asr", status_code=202, response_model=JobCreated,
              responses={200: {"description": "the finished job (with ?wait=)"}},
              openapi_extra={"requestBody": {"content": {
                  "audio/*": {"schema": {"type": "string", "format": "binary"}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}}}}}})
    async def submit_asr(request: Request, query: Annotated[ASRQuery, Query()],
                         who: Identity = Depends(require("submit"))):
        """The audio file as the request body (audio/*), or as the `file` part of a form."""
        length = request.headers.get("content-length")
        if length is not None and not length.isdigit():
            raise HTTPException(400, "Content-Length must be a number of bytes", {"Connection": "close"})
        if length is not None and int(length) > max_bytes + (64 << 10):
            raise HTTPException(413, f"the upload is larger than the limit of {settings.max_upload_mb:g} MB",
                                {"Connection": "close"})
        with uploads.slot():
            tmp = await _receive(request, max_bytes, settings.max_upload_mb)
        try:
            await run_in_threadpool(inspect_audio, tmp, AudioLimits())
            options = query.model_dump(exclude_none=True, exclude={"id", "wait"})
            job = await run_in_threadpool(partial(client.submit_asr, tmp, query.id, "the upload",
                                                  submitter=who.name, **options))
        except JobIdConflict as e:
            raise HTTPException(409, str(e)) from None
        except StorageUnavailable as e:
            raise HTTPException(503, str(e)) from None
        except (AudioError, ValueError) as e:
            # the temporary file is ours: its name, even its stem, is no business of the client
            raise HTTPException(422, str(e).replace(str(tmp), "the upload").replace(tmp.stem, "upload")) from None
        finally:
            tmp.unlink(missing_ok=True)
        return await created(job, query.wait)

    @app.get("/v1/jobs/{job_id}")
    def get_job(job_id: str, who: Identity = Depends(require("read"))) -> dict:
        return view(job_or_404(job_id, who))

    @app.get("/v1/jobs/{job_id}/audio", response_class=StreamingResponse,
             responses={200: {"content": {t: {} for t in AUDIO_MEDIA_TYPES.values()}}})
    def get_audio(job_id: str, who: Identity = Depends(require("read"))):
        job = job_or_404(job_id, who)
        if job.kind != "tts":
            raise HTTPException(409, f"job {job_id} is an {job.kind} job: it has no audio output")
        if job.state != "succeeded":
            raise HTTPException(409, f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
        try:
            f = client.storage.open(job.result["audio_ref"])
        except StorageUnavailable as e:
            raise HTTPException(503, str(e)) from None
        except StorageError as e:  # removed since (retention), or never stored
            raise HTTPException(410, str(e)) from None
        ref = job.result["audio_ref"]
        media_type = job.result.get("media_type", "audio/wav")
        name = f"{job_id}{PurePosixPath(ref).suffix}"
        return StreamingResponse(_stream(f), media_type=media_type,
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/v1/jobs/{job_id}/transcript")
    def get_transcript(job_id: str, format: str = Query("txt", description=", ".join(FORMATS)),
                       who: Identity = Depends(require("read"))):
        if format not in FORMATS:
            raise HTTPException(422, f"format must be one of {', '.join(FORMATS)}")
        job = job_or_404(job_id, who)
        if job.kind != "asr":
            raise HTTPException(409, f"job {job_id} is a {job.kind} job: it has no transcript")
        if job.state != "succeeded":
            raise HTTPException(409, f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
        return PlainTextResponse(render(job.result, format), media_type=MEDIA_TYPES[format])

    @app.delete("/v1/jobs/{job_id}")
    def cancel_job(job_id: str, who: Identity = Depends(require("read"))) -> dict:
        job_or_404(job_id, who)
        try:
            return view(client.cancel(job_id))
        except JobNotFound as e:
            raise HTTPException(404, str(e)) from None

    app.include_router(openai_router(settings, client))
    return app


def _add_docs(app: FastAPI) -> None:
    """The schema and its two viewers, behind the token like everything else."""
    reader = [Depends(require("read"))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=reader)
    def openapi() -> dict:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=reader)
    def swagger():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="speechq")

    @app.get("/redoc", include_in_schema=False, dependencies=reader)
    def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title="speechq")


async def _receive(request: Request, max_bytes: int, max_mb: float) -> Path:
    """The uploaded audio in a temporary file (outside storage), refused once over the limit."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        if request.headers.get("content-length") is None:
            raise HTTPException(411, "a form upload needs a Content-Length")
        form = await request.form(max_files=1)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "the form has no `file` part")
        suffix = Path(upload.filename or "").suffix.lower() or UPLOAD_SUFFIXES.get(upload.content_type, ".bin")
        chunks = _read_upload(upload)
    else:
        suffix = UPLOAD_SUFFIXES.get(content_type, ".bin")
        chunks = request.stream()
    fd, name = tempfile.mkstemp(prefix="speechq-upload-", suffix=suffix)
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise HTTPException(413, f"the upload is larger than the limit of {max_mb:g} MB",
                                        {"Connection": "close"})
                f.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    if size == 0:
        Path(name).unlink(missing_ok=True)
        raise HTTPException(422, "the upload is empty")
    return Path(name)


def _stream(f):
    """A stored file's bytes in chunks (iterated in a worker thread), closed at the end."""
    try:
        while chunk := f.read(CHUNK):
            yield chunk
    finally:
        f.close()


async def _read_upload(upload):
    while chunk := await upload.read(CHUNK):
        yield chunk
