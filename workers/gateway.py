"""The HTTP gateway: the job API for clients in any language (FastAPI; OpenAPI at /docs).

    speechq serve --port 8000
    curl -X POST localhost:8000/v1/jobs/tts -H 'content-type: application/json' -d '{"text": "Hi."}'
    curl -X POST localhost:8000/v1/jobs/asr -H 'content-type: audio/wav' --data-binary @speech.wav
    curl localhost:8000/v1/jobs/ID;  curl -o out.wav localhost:8000/v1/jobs/ID/audio
    curl -X POST 'localhost:8000/v1/jobs/tts?wait=30' -H 'content-type: application/json' -d '{"text": "Hi."}'
    curl 'localhost:8000/v1/jobs/ID/transcript?format=srt';  curl -X DELETE localhost:8000/v1/jobs/ID

Uploads are checked (size before reading, then decodability) before anything enters the storage
(a directory or an object store: `workers.storage`); audio downloads stream from it. With
`?wait=SECONDS` a submission answers with the finished job when it ends in time (200), and
with its id otherwise (202). A job's JSON holds storage references and URLs, never a server's
file paths. OpenAI's audio API is served beside the job API (`workers.openai_api`). With
SPEECHQ_API_TOKEN set, every /v1/jobs and /v1/audio call needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import os
import tempfile
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from pipeline.frontend.audio import AudioError, load_audio
from pipeline.frontend.text import TextError, check_text
from pipeline.frontend.codecs import MEDIA_TYPES as AUDIO_MEDIA_TYPES
from pipeline.inference.formats import FORMATS, MEDIA_TYPES, render
from pipeline.inference.options import RecognitionOptions, TTSOptions, default_of, job_fields, spec
from workers.client import Client, JobNotFound
from workers.jobs import TERMINAL
from workers.openai_api import openai_router
from workers.settings import Settings
from workers.storage import StorageError, StorageUnavailable

UPLOAD_SUFFIXES = {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/flac": ".flac",
                   "audio/x-flac": ".flac", "audio/ogg": ".ogg", "audio/mpeg": ".mp3", "audio/mp3": ".mp3"}
CHUNK = 1 << 16
MAX_WAIT_SECONDS = 600
_JOB_ID = Field(None, description="job id; resubmitting an id returns that job")
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


def create_gateway(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    client = Client(settings)
    max_bytes = int(settings.max_upload_mb * 2**20)
    app = FastAPI(title="speechq", description="TTS and ASR jobs over a Celery queue", version="0.1.0")

    def authorize(request: Request) -> None:
        if not settings.api_token:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), settings.api_token.encode()):
            raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})

    def job_or_404(job_id: str):
        try:
            return client.get(job_id)
        except JobNotFound as e:
            raise HTTPException(404, str(e)) from None

    def view(job) -> dict:
        """A job as clients see it: references and URLs, not the server's paths."""
        d = job.to_dict()
        if d.get("result"):
            d["result"] = {k: v for k, v in d["result"].items() if k != "audio"}
        if d.get("request"):
            d["request"] = {k: v for k, v in d["request"].items() if k != "name"}
        if job.kind == "tts" and job.state == "succeeded":
            d["audio_url"] = f"/v1/jobs/{job.id}/audio"
        if job.kind == "asr" and job.state == "succeeded":
            d["transcript_url"] = f"/v1/jobs/{job.id}/transcript"
        return d

    def created(job, wait: float | None):
        """202 with the id, or with `wait`, the job once it ends within it (200)."""
        if wait:
            job = client.wait(job.id, timeout=wait)
            if job.state in TERMINAL:
                return JSONResponse(view(job), status_code=200)
        return JSONResponse(JobCreated(id=job.id, state=job.state).model_dump(), status_code=202)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/health", include_in_schema=False)
    @app.get("/v1/health")
    def health() -> dict:
        from workers import monitoring

        if not client.ping():
            raise HTTPException(503, "Redis is unreachable")
        snap = monitoring.snapshot(client.store.r)
        online = sum(1 for w in snap["workers"] if w["online"])
        return {"status": "ok" if online else "no workers", "redis": True, "workers_online": online,
                "queues": snap["queues"]}

    @app.post("/v1/jobs/tts", status_code=202, response_model=JobCreated, dependencies=[Depends(authorize)],
              responses={200: {"description": "the finished job (with ?wait=)"}})
    def submit_tts(body: TTSJob, wait: float | None = _WAIT):
        try:
            text = check_text(body.text, settings.max_text_chars)
            options = body.model_dump(exclude_none=True, exclude={"text", "id"})
            job = client.submit_tts(text, job_id=body.id, **options)
        except (TextError, ValueError) as e:
            raise HTTPException(422, str(e)) from None
        return created(job, wait)

    @app.post("/v1/jobs/asr", status_code=202, response_model=JobCreated, dependencies=[Depends(authorize)],
              responses={200: {"description": "the finished job (with ?wait=)"}},
              openapi_extra={"requestBody": {"content": {
                  "audio/*": {"schema": {"type": "string", "format": "binary"}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}}}}}})
    async def submit_asr(request: Request, query: Annotated[ASRQuery, Query()]):
        """The audio file as the request body (audio/*), or as the `file` part of a form."""
        length = request.headers.get("content-length")
        if length is not None and int(length) > max_bytes + (64 << 10):
            raise HTTPException(413, f"the upload is larger than the limit of {settings.max_upload_mb:g} MB")
        tmp = await _receive(request, max_bytes, settings.max_upload_mb)
        try:
            await run_in_threadpool(_check_audio, tmp)
            options = query.model_dump(exclude_none=True, exclude={"id", "wait"})
            job = await run_in_threadpool(partial(client.submit_asr, tmp, query.id, "the upload",
                                                  **options))
        except StorageUnavailable as e:
            raise HTTPException(503, str(e)) from None
        except (AudioError, ValueError) as e:
            raise HTTPException(422, str(e).replace(str(tmp), "the upload")) from None
        finally:
            tmp.unlink(missing_ok=True)
        return await run_in_threadpool(created, job, query.wait)

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(authorize)])
    def get_job(job_id: str) -> dict:
        return view(job_or_404(job_id))

    @app.get("/v1/jobs/{job_id}/audio", dependencies=[Depends(authorize)],
             response_class=StreamingResponse,
             responses={200: {"content": {t: {} for t in AUDIO_MEDIA_TYPES.values()}}})
    def get_audio(job_id: str):
        job = job_or_404(job_id)
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

    @app.get("/v1/jobs/{job_id}/transcript", dependencies=[Depends(authorize)])
    def get_transcript(job_id: str, format: str = Query("txt", description=", ".join(FORMATS))):
        if format not in FORMATS:
            raise HTTPException(422, f"format must be one of {', '.join(FORMATS)}")
        job = job_or_404(job_id)
        if job.kind != "asr":
            raise HTTPException(409, f"job {job_id} is a {job.kind} job: it has no transcript")
        if job.state != "succeeded":
            raise HTTPException(409, f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
        return PlainTextResponse(render(job.result, format), media_type=MEDIA_TYPES[format])

    @app.delete("/v1/jobs/{job_id}", dependencies=[Depends(authorize)])
    def cancel_job(job_id: str) -> dict:
        try:
            return view(client.cancel(job_id))
        except JobNotFound as e:
            raise HTTPException(404, str(e)) from None

    app.include_router(openai_router(settings, client, authorize))
    return app


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
                    raise HTTPException(413, f"the upload is larger than the limit of {max_mb:g} MB")
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


def _check_audio(path: Path) -> None:
    load_audio(path, 16_000)
