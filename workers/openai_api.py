"""OpenAI's audio API over speechq's queue: clients, agents and SDKs that speak OpenAI's
`/v1/audio/transcriptions` and `/v1/audio/speech` work against speechq unchanged.

    client = openai.OpenAI(base_url="http://localhost:8000/v1", api_key=TOKEN)
    client.audio.transcriptions.create(model="speechq-asr", file=open("speech.wav", "rb"))
    client.audio.speech.create(model="speechq-tts", voice="alloy", input="Hello there.")
    curl -F file=@speech.wav -F model=speechq-asr localhost:8000/v1/audio/transcriptions

Every request is an ordinary job: the endpoint submits it and waits on it, so batching,
monitoring, limits and retries apply as to any job. Speech is streamed: the job publishes each
sentence's audio as it is made (`workers.parts`) and the response sends it on at once, through
one ffmpeg process for the encoded formats. Errors have OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`. The models are English-only: a `language`
other than English and the translations endpoint are refused. A gateway token (`workers.auth`)
is the `api_key`.

OpenAI's voice names map to speechq's (`OPENAI_VOICES`, the table in README.md); a speechq voice name
(`speechq voices`) is taken as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.routing import APIRoute

from pipeline.frontend.header import AudioError, AudioLimits, inspect_audio
from pipeline.frontend.codecs import MEDIA_TYPES, ffmpeg_command, wav_stream_header
from pipeline.frontend.text import TextError, check_text
from pipeline.inference.formats import render
from pipeline.inference.options import MAX_HOTWORD_CHARS, MAX_HOTWORDS, TTS_VOICES, TTSOptions
from workers import parts
from workers.auth import Identity, require
from workers.client import Client
from workers.jobs import TERMINAL
from workers.settings import Settings
from workers.waiting import job_ends

# model id -> the TTS options it stands for (None: speech recognition); OpenAI's own ids are
# aliases, so clients that hard-code them work
ASR_MODEL, TTS_MODEL = "speechq-asr", "speechq-tts"
MODELS: dict[str, dict | None] = {
    ASR_MODEL: None,
    TTS_MODEL: {"decoder": "nat"},
    "speechq-tts-ar": {"decoder": "ar"},
    "speechq-tts-ar-dot": {"decoder": "ar", "attention": "dot"},
    "speechq-tts-ar-monotonic": {"decoder": "ar", "attention": "monotonic"},
    "speechq-tts-ar-location": {"decoder": "ar", "attention": "location"},
}
ALIASES = {"whisper-1": ASR_MODEL, "gpt-4o-transcribe": ASR_MODEL,
           "gpt-4o-mini-transcribe": ASR_MODEL, "tts-1": TTS_MODEL, "tts-1-hd": TTS_MODEL,
           "gpt-4o-mini-tts": TTS_MODEL}
# OpenAI's voices -> ours: slt is the one female voice; the male ones share the rest
OPENAI_VOICES = {"alloy": "slt", "ash": "awb", "ballad": "rms", "coral": "slt", "echo": "awb",
                 "fable": "kal16", "onyx": "rms", "nova": "slt", "sage": "kal16",
                 "shimmer": "slt", "verse": "rms", "marin": "slt", "cedar": "awb"}
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
ENGLISH = {"en", "eng", "english", "en-us", "en-gb"}
SPEECH_SAMPLE_RATE = 24_000  # OpenAI's speech output rate (raw pcm is read at it)
SPEECH_DEFAULTS = {"response_format": "mp3", "speed": 1.0}
CHUNK = 1 << 15
MAX_STREAM_CONNECTIONS = 1024
JOB_CHECK_SECONDS = 30


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}
        return JSONResponse(body, status_code=self.status)


class OpenAIRoute(APIRoute):
    """A route whose every error (ours, FastAPI's validation, a refused token) is answered in
    OpenAI's shape."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as e:
                return e.response()
            except RequestValidationError as e:
                first = e.errors()[0] if e.errors() else {}
                param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
                return OpenAIError(400, f"{param}: {first.get('msg', 'invalid request')}",
                                   param).response()
            except HTTPException as e:
                kind = "authentication_error" if e.status_code == 401 else "invalid_request_error"
                code = "invalid_api_key" if e.status_code == 401 else None
                return OpenAIError(e.status_code, str(e.detail), None, code, kind).response()
        return handle


def openai_router(settings: Settings, client: Client) -> APIRouter:
    """The OpenAI-compatible endpoints, behind the gateway's tokens (`workers.auth`): listing
    models needs the read scope, transcribing and speaking the submit scope, and each job is
    recorded as its caller's."""
    router = APIRouter(prefix="/v1", route_class=OpenAIRoute, tags=["OpenAI-compatible"])
    reader = [Depends(require("read"))]
    max_bytes = int(settings.max_upload_mb * 2**20)

    @router.get("/models", dependencies=reader)
    def list_models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                            "owned_by": "speechq"} for name in MODELS]}

    @router.get("/models/{model}", dependencies=reader)
    def get_model(model: str) -> dict:
        if model not in MODELS and model not in ALIASES:
            raise OpenAIError(404, f"the model {model!r} does not exist", "model",
                              "model_not_found")
        return {"id": model, "object": "model", "created": 0, "owned_by": "speechq"}

    @router.post("/audio/translations", dependencies=reader)
    def translations() -> None:
        raise OpenAIError(400, "translation is not offered: speechq's models are English-only "
                               "(use /v1/audio/transcriptions)", "model", "unsupported")

    @router.post("/audio/transcriptions", openapi_extra=_TRANSCRIPTION_SCHEMA)
    async def transcriptions(request: Request, who: Identity = Depends(require("submit"))):
        """OpenAI's transcription request (multipart form); `prompt` becomes the job's hotwords."""
        length = request.headers.get("content-length")
        if length is not None and int(length) > max_bytes + (64 << 10):
            raise OpenAIError(413, f"file: larger than the limit of {settings.max_upload_mb:g} MB",
                              "file", "file_too_large")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "multipart/form-data":
            raise OpenAIError(400, "send a multipart/form-data form with `file` and `model`")
        form = await request.form(max_files=1)
        fields = _transcription_fields(form)
        tmp = await _save_upload(form["file"], max_bytes, settings.max_upload_mb)
        try:
            try:
                # the header against the limits, never a decode: the worker decodes (a bomb's
                # header is refused here, a broken body fails its job there)
                await run_in_threadpool(inspect_audio, tmp, AudioLimits())
            except AudioError as e:
                raise OpenAIError(400, "file: " + str(e).replace(str(tmp), "the upload"),
                                  "file", "invalid_file_format") from None
            options = {"hotwords": fields["hotwords"]} if fields["hotwords"] else {}
            job = await run_in_threadpool(partial(client.submit_asr, tmp, None, "the upload",
                                                  submitter=who.name, **options))
        finally:
            tmp.unlink(missing_ok=True)
        job = await _wait(job.id, settings)
        return _transcript_response(job.result, fields)

    @router.post("/audio/speech")
    async def speech(request: Request, who: Identity = Depends(require("submit"))):
        """OpenAI's speech request (JSON); the audio is streamed as its sentences are made."""
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise OpenAIError(400, "the body must be a JSON object") from None
        text, options = _speech_options(body, settings)
        redis = _async_redis(settings)
        job = await run_in_threadpool(partial(client.submit, "tts", {
            "text": text, "options": options, "stream": True}, submitter=who.name))
        stream = parts.read(redis, job.id)
        first = await _first_part(stream, client, job.id, settings)
        fmt = options["format"]
        headers = {"Content-Disposition": f'attachment; filename="speech{_suffix(fmt)}"',
                   "X-Speechq-Job": job.id}
        return StreamingResponse(_encoded(first, stream, fmt), media_type=MEDIA_TYPES[fmt],
                                 headers=headers)

    return router


# ---------------------------------------------------------------- transcription


_TRANSCRIPTION_SCHEMA = {"requestBody": {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "model"], "properties": {
        "file": {"type": "string", "format": "binary"},
        "model": {"type": "string", "enum": [ASR_MODEL]},
        "language": {"type": "string", "description": "en (English only)"},
        "prompt": {"type": "string", "description": "words or phrases to favour (names, terms), "
                                                    "separated by commas: the job's hotwords"},
        "response_format": {"type": "string", "enum": list(TRANSCRIPT_FORMATS)},
        "temperature": {"type": "number", "description": "accepted, unused: beam search "
                                                         "decodes deterministically"},
        "timestamp_granularities[]": {"type": "array", "items": {
            "type": "string", "enum": ["word", "segment"]}}}}}}}}


def _transcription_fields(form) -> dict:
    """The form's fields checked: OpenAIError naming the first bad one."""
    def one(name: str, default: str | None = None) -> str | None:
        value = form.get(name, default)
        return value if value is None or isinstance(value, str) else None

    model = one("model")
    if not model:
        raise OpenAIError(400, "model: required (speechq-asr)", "model")
    if ALIASES.get(model, model) != ASR_MODEL:
        raise OpenAIError(400, f"model: {model!r} does not transcribe; use {ASR_MODEL}", "model",
                          "model_not_found")
    if form.get("file") is None or isinstance(form.get("file"), str):
        raise OpenAIError(400, "file: required, the audio file as a form part", "file")
    language = one("language")
    if language and language.strip().lower() not in ENGLISH:
        raise OpenAIError(400, f"language: {language!r} is not offered; the models are "
                               "English-only (en)", "language", "unsupported_language")
    fmt = one("response_format", "json")
    if fmt not in TRANSCRIPT_FORMATS:
        raise OpenAIError(400, f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}, "
                               f"not {fmt!r}", "response_format")
    temperature = one("temperature")
    try:
        if temperature is not None and not 0 <= float(temperature) <= 1:
            raise ValueError
    except ValueError:
        raise OpenAIError(400, f"temperature must be a number from 0 to 1, not {temperature!r}",
                          "temperature") from None
    granularities = [g for key in ("timestamp_granularities[]", "timestamp_granularities")
                     for g in form.getlist(key)]
    bad = [g for g in granularities if g not in ("word", "segment")]
    if bad:
        raise OpenAIError(400, f"timestamp_granularities[] takes word and segment, not {bad[0]!r}",
                          "timestamp_granularities[]")
    if granularities and fmt != "verbose_json":
        raise OpenAIError(400, "timestamp_granularities[] needs response_format verbose_json",
                          "timestamp_granularities[]")
    return {"format": fmt, "granularities": set(granularities) or {"segment"},
            "hotwords": prompt_hotwords(one("prompt") or "")}


async def _save_upload(upload, max_bytes: int, max_mb: float) -> Path:
    """The form's file in a temporary file (outside storage), refused once over the limit."""
    suffix = Path(upload.filename or "").suffix.lower()[:8] or ".bin"
    fd, name = tempfile.mkstemp(prefix="speechq-upload-", suffix=suffix)
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise OpenAIError(413, f"file: larger than the limit of {max_mb:g} MB",
                                      "file", "file_too_large")
                f.write(chunk)
        if size == 0:
            raise OpenAIError(400, "file: the upload is empty", "file")
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def prompt_hotwords(prompt: str) -> list[str]:
    """A transcription prompt as hotwords: its comma-, semicolon- or line-separated phrases;
    a longer piece (a sentence of context) gives its capitalised words, the names it holds."""
    words = []
    for piece in re.split(r"[,;\n]", prompt):
        piece = piece.strip(" .!?\"'")
        if not piece:
            continue
        if len(piece.split()) <= 3 and len(piece) <= MAX_HOTWORD_CHARS:
            words.append(piece)
        else:
            words += [w.strip(".!?\"'()") for w in piece.split()[1:] if w[:1].isupper()]
    unique = list(dict.fromkeys(w for w in words if w))
    if len(unique) > MAX_HOTWORDS:
        raise OpenAIError(400, f"prompt: at most {MAX_HOTWORDS} words or phrases", "prompt")
    return unique


def _transcript_response(result: dict, fields: dict) -> Response:
    fmt = fields["format"]
    if fmt == "json":
        return JSONResponse({"text": result["text"]})
    if fmt == "text":
        return PlainTextResponse(result["text"] + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(render(result, fmt), media_type="text/plain")
    from pipeline.inference.formats import cues

    duration = result.get("audio_duration") or result.get("duration") or 0.0
    verbose = {"task": "transcribe", "language": "english", "duration": duration,
               "text": result["text"]}
    if "segment" in fields["granularities"]:
        verbose["segments"] = [
            {"id": i, "seek": 0, "start": a, "end": b, "text": text, "tokens": [],
             "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 1.0,
             "no_speech_prob": 0.0} for i, (a, b, text) in enumerate(cues(result))]
    if "word" in fields["granularities"]:
        verbose["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"]}
                            for w in result.get("words") or []]
    return JSONResponse(verbose)


# ---------------------------------------------------------------- speech


def _speech_options(body, settings: Settings) -> tuple[str, dict]:
    """An OpenAI speech request -> (text, the TTS job's options); OpenAIError naming the first
    bad field."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a JSON object")
    body = {**SPEECH_DEFAULTS, **{k: v for k, v in body.items() if v is not None}}
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "model: required (speechq-tts)", "model")
    chosen = MODELS.get(ALIASES.get(model, model), "unknown")
    if chosen == "unknown" or chosen is None:
        raise OpenAIError(400, f"model: {model!r} does not speak; use one of "
                               f"{', '.join(m for m, o in MODELS.items() if o)}", "model",
                          "model_not_found")
    text = body.get("input")
    if not isinstance(text, str):
        raise OpenAIError(400, "input: required, the text to speak", "input")
    try:
        text = check_text(text, settings.max_text_chars)
    except TextError as e:
        raise OpenAIError(400, f"input: {e}", "input") from None
    voice = body.get("voice")
    if isinstance(voice, dict):  # OpenAI's custom-voice form, {"id": ...}
        voice = voice.get("id")
    ours = OPENAI_VOICES.get(voice, voice) if isinstance(voice, str) else None
    if ours not in TTS_VOICES:
        raise OpenAIError(400, f"voice must be one of {', '.join(TTS_VOICES)} or OpenAI's "
                               f"{', '.join(OPENAI_VOICES)}, not {voice!r}", "voice")
    fmt = body["response_format"]
    if fmt not in SPEECH_FORMATS:
        raise OpenAIError(400, f"response_format must be one of {', '.join(SPEECH_FORMATS)}, "
                               f"not {fmt!r}", "response_format")
    speed = body["speed"]
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4:
        raise OpenAIError(400, f"speed must be a number from 0.25 to 4.0, not {speed!r}", "speed")
    stream_format = body.get("stream_format", "audio")
    if stream_format != "audio":
        raise OpenAIError(400, "stream_format: only 'audio' is offered", "stream_format")
    options = {**chosen, "format": fmt, "sample_rate": SPEECH_SAMPLE_RATE}
    if ours != TTS_VOICES[0] or chosen.get("decoder") == "nat":
        options["voice"] = ours
    if speed != 1:
        options["speed"] = float(speed)
    try:
        TTSOptions(**options)
    except ValueError as e:
        param = next((f for f in ("speed", "voice") if f in str(e)), "model")
        raise OpenAIError(400, f"{param}: {e}", param) from None
    return text, options


def _suffix(fmt: str) -> str:
    return {"opus": ".ogg", "pcm": ".pcm"}.get(fmt, f".{fmt}")


def _async_redis(settings: Settings):
    """One redis.asyncio client per event loop and URL, shared by the streaming responses. A
    response waiting for its next part holds one connection in a blocking XREAD; past
    MAX_STREAM_CONNECTIONS of them, a response waits for a free connection instead of failing."""
    import redis.asyncio as aioredis

    loop = asyncio.get_running_loop()
    key = (id(loop), settings.redis_url)
    if key not in _REDIS:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=MAX_STREAM_CONNECTIONS, timeout=None)
        _REDIS[key] = aioredis.Redis(connection_pool=pool)
    return _REDIS[key]


_REDIS: dict = {}


async def _wait(job_id: str, settings: Settings):
    """The finished job (the gateway holds the request until it ends); OpenAIError if it
    failed, or did not end within the job time limit."""
    job = await job_ends(settings.redis_url).wait(job_id, settings.hard_time_limit + 60)
    if job is None:
        raise OpenAIError(500, f"job {job_id} is gone", None, None, "server_error")
    if job.state == "succeeded":
        return job
    if job.state not in TERMINAL:
        raise OpenAIError(504, f"job {job_id} did not finish in time (it is {job.state})",
                          None, "timeout", "server_error")
    input_error = job.error_type in _INPUT_ERRORS
    raise OpenAIError(400 if input_error else 500, f"job {job_id} {job.state}: {job.error}",
                      None, None, "invalid_request_error" if input_error else "server_error")


_INPUT_ERRORS = {"TextError", "AudioError", "ValueError", "StorageError"}


async def _first_part(stream: AsyncIterator, client: Client, job_id: str, settings: Settings):
    """The job's first sentence: OpenAIError if the job ends without one (its stream's end mark,
    workers.parts) or does not start in time. The job itself is looked at only every
    JOB_CHECK_SECONDS, for an end whose mark was lost (a Redis restart without persistence)."""
    deadline = time.monotonic() + settings.hard_time_limit + 60
    checked, ended = time.monotonic(), False
    async for part in stream:
        if part is not None:
            return part
        if ended:  # parts are published before a job ends: one more read has them all
            break
        if time.monotonic() - checked >= JOB_CHECK_SECONDS:
            checked = time.monotonic()
            job = await run_in_threadpool(client.get, job_id)
            if job is None:
                raise OpenAIError(500, f"job {job_id} is gone", None, None, "server_error")
            ended = job.state in TERMINAL
        if time.monotonic() > deadline:
            raise OpenAIError(504, f"job {job_id} did not start in time", None, "timeout",
                              "server_error")
    await _wait(job_id, settings)  # raises for a job that failed or was cancelled
    raise OpenAIError(500, f"job {job_id} ended without streaming its audio", None, None,
                      "server_error")


async def _pcm(first: parts.Part, stream: AsyncIterator) -> AsyncIterator[bytes]:
    yield first.pcm
    if first.last:
        return
    async for part in stream:
        if part is not None:
            yield part.pcm
            if part.last:
                return


async def _encoded(first: parts.Part, stream: AsyncIterator, fmt: str) -> AsyncIterator[bytes]:
    """The parts' PCM as `fmt`: raw and wav as they come, the rest through one ffmpeg."""
    pcm = _pcm(first, stream)
    if fmt in ("pcm", "wav"):
        if fmt == "wav":
            yield wav_stream_header(first.sample_rate)
        async for chunk in pcm:
            yield chunk
        return
    rate = first.sample_rate
    proc = await asyncio.create_subprocess_exec(
        *ffmpeg_command(fmt, rate, rate), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)

    async def feed() -> None:
        try:
            async for chunk in pcm:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    feeder = asyncio.create_task(feed())
    try:
        while chunk := await proc.stdout.read(CHUNK):
            yield chunk
        await feeder
    finally:
        feeder.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()

