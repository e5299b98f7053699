"""OpenAI's audio API, through the official `openai` package, over a real socket against a real
worker (a tiny four-voice TTS model and the stub recogniser)."""

from __future__ import annotations

import io
import json
import subprocess
import time

import httpx
import numpy as np
import pytest
import redis
import soundfile as sf

from pipeline.inference.options import TTS_VOICES
from tests.helpers import make_tiny_tts_checkpoint, write_noise_wav
from tests.workers.conftest import GatewayProcess, WorkerProcess, flush, service_environment

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow
TOKEN = "test-token"
FIVE_SENTENCES = " ".join([
    "The birch canoe slid on the smooth planks and drifted past the old stone mill.",
    "Glue the sheet to the dark blue background before the paint dries in the sun.",
    "It is easy to tell the depth of a well when the water is clear and still.",
    "These days a chicken leg is a rare dish for the hungry men of the valley.",
    "Rice is often served in round bowls with a little salt and a cup of tea.",
])


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A worker whose NAT model speaks every shipped voice, a gateway on a free port, and an
    `openai.OpenAI` client pointed at it."""
    flush()
    root = tmp_path_factory.mktemp("openai")
    make_tiny_tts_checkpoint(root / "checkpoints" / "tts-nat.pt", frames_per_phone=10,
                             speakers=[f"flite-{v}" for v in TTS_VOICES])
    env = service_environment(root, MAX_UPLOAD_MB="0.2", API_TOKEN=TOKEN)
    worker = WorkerProcess(env, root / "worker.log").wait_ready()
    gateway = GatewayProcess(worker.env).wait_ready()
    base = gateway.base_url
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0, timeout=120)
    http = httpx.Client(base_url=base, headers={"authorization": f"Bearer {TOKEN}"}, timeout=120)
    wav = write_noise_wav(root / "speech.wav", 1.5)
    try:
        # warm up: the first job of a pool process loads the models
        client.audio.speech.create(model="speechq-tts", voice="alloy", input="Warm up.",
                                   response_format="wav").read()
        yield Api(client, http, base, wav, env, worker)
    finally:
        http.close()
        gateway.stop()
        worker.terminate()


class Api:
    def __init__(self, client, http, base, wav, env, worker):
        self.client, self.http, self.base, self.wav, self.env, self.worker = (
            client, http, base, wav, env, worker)


def _duration(data: bytes, fmt: str) -> float:
    """Seconds of audio in a body: soundfile where libsndfile reads it, else every sample
    decoded by ffmpeg (aac, and a streamed flac, whose header cannot hold its length)."""
    if fmt in ("aac", "flac"):
        data = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1",
                               "-ar", "24000", "pipe:1"], input=data, capture_output=True,
                              check=True).stdout
        fmt = "pcm"
    if fmt == "pcm":
        return len(data) / 2 / 24_000
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return len(samples) / rate


def test_models_are_listed(api):
    ids = {m.id for m in api.client.models.list()}
    assert {"speechq-asr", "speechq-tts"} <= ids


def test_transcription_in_every_response_format(api):
    def create(**kw):
        kw.setdefault("model", "speechq-asr")
        with api.wav.open("rb") as f:
            return api.client.audio.transcriptions.create(file=f, **kw)

    assert isinstance(create().text, str)
    assert isinstance(create(response_format="json", language="en", temperature=0).text, str)
    text = create(response_format="text")
    assert isinstance(text, str)
    assert "-->" in create(response_format="srt") or text.strip() == ""
    assert create(response_format="vtt").startswith("WEBVTT")
    verbose = create(response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert verbose.duration == pytest.approx(1.5, abs=0.01)
    assert isinstance(verbose.words, list) and isinstance(verbose.segments, list)
    assert isinstance(create(model="whisper-1", prompt="Okonkwo, New York").text, str)


def test_curl_transcribes_in_one_call(api):
    out = subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {TOKEN}",
                          "-F", f"file=@{api.wav}", "-F", "model=speechq-asr",
                          f"{api.base}/v1/audio/transcriptions"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert set(json.loads(out.stdout)) == {"text"}


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_speech_in_every_response_format(api, fmt):
    text = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."
    reference = api.client.audio.speech.create(model="speechq-tts", voice="alloy", input=text,
                                               response_format="wav").read()
    expected = _duration(reference, "wav")
    body = api.client.audio.speech.create(model="tts-1", voice="alloy", input=text,
                                          response_format=fmt).read()
    assert expected > 2
    # the codecs' priming and padding: a frame or two of silence
    assert _duration(body, fmt) == pytest.approx(expected, abs=0.08), fmt


def test_every_voice_speaks(api):
    from workers.openai_api import OPENAI_VOICES

    lengths = {}
    for voice in list(TTS_VOICES) + sorted(OPENAI_VOICES):
        body = api.client.audio.speech.create(model="speechq-tts", voice=voice, response_format="pcm",
                                              input="A voice of its own.").read()
        lengths[voice] = len(body)
        assert len(body) > 24_000, voice
    # the same voice under its OpenAI name: the same durations (a deterministic tiny model)
    assert lengths["alloy"] == lengths[OPENAI_VOICES["alloy"]]


def test_speech_speed(api):
    slow = api.client.audio.speech.create(model="speechq-tts", voice="echo", response_format="pcm",
                                          input="Read this slowly.", speed=0.5).read()
    fast = api.client.audio.speech.create(model="speechq-tts", voice="echo", response_format="pcm",
                                          input="Read this slowly.", speed=2.0).read()
    assert len(slow) > 2.5 * len(fast)


def test_speech_streams_before_the_last_sentence_is_made(api):
    """The first bytes arrive before the job's fifth sentence is published (its Redis stream
    entry's server time)."""
    start = time.time()
    with api.client.audio.speech.with_streaming_response.create(
            model="speechq-tts", voice="nova", input=FIVE_SENTENCES, response_format="mp3") as r:
        job_id = r.headers["x-speechq-job"]
        chunks = r.iter_bytes(1024)
        first = next(chunks)
        first_at = time.time()
        body = first + b"".join(chunks)
    entries = redis.Redis.from_url(api.env["SPEECHQ_REDIS_URL"]).xrange(f"speechq:parts:{job_id}")
    assert [int(f[b"index"]) for _, f in entries] == [0, 1, 2, 3, 4]
    first_made, last_made = (int(e[0].split(b"-")[0]) / 1000 for e in (entries[0], entries[-1]))
    assert start < first_made <= first_at < last_made, (start, first_made, first_at, last_made)
    assert _duration(body, "mp3") > 10


def _error(r: httpx.Response, status: int, param: str | None) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
    if param:
        assert param.rstrip("[]") in error["message"]
    return error["message"]


def test_bad_requests_have_the_openai_error_shape(api, tmp_path):
    speech = {"model": "speechq-tts", "voice": "alloy", "input": "Hello."}
    for change, param in (({"response_format": "ogg"}, "response_format"),
                          ({"voice": "darth"}, "voice"), ({"model": "tts-2"}, "model"),
                          ({"input": "  "}, "input"), ({"speed": 4.5}, "speed"),
                          ({"speed": 0.1}, "speed"), ({"input": "a" * 5000}, "input")):
        _error(api.http.post("/v1/audio/speech", json={**speech, **change}), 400, param)
    _error(api.http.post("/v1/audio/speech", json={**speech, "model": "speechq-tts-ar", "voice": "echo"}),
           400, "voice")

    def form(**fields):
        return {"model": "speechq-asr", **fields}
    wav = api.wav.read_bytes()
    files = {"file": ("speech.wav", wav, "audio/wav")}
    for fields, param in ((form(response_format="doc"), "response_format"),
                          (form(language="fr"), "language"), (form(model="tts-1"), "model"),
                          (form(temperature="hot"), "temperature"),
                          (form(response_format="json", **{"timestamp_granularities[]": "word"}),
                           "timestamp_granularities[]")):
        _error(api.http.post("/v1/audio/transcriptions", data=fields, files=files), 400, param)
    _error(api.http.post("/v1/audio/transcriptions", data=form(), files={
        "file": ("notes.wav", b"this is not audio" * 100, "audio/wav")}), 400, "file")
    _error(api.http.post("/v1/audio/transcriptions", data=form(), files={
        "file": ("big.wav", b"\0" * 400_000, "audio/wav")}), 413, "file")
    message = _error(api.http.post("/v1/audio/translations", data=form(), files=files), 400, "model")
    assert "English" in message
    r = httpx.post(f"{api.base}/v1/audio/speech", json=speech)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"

    with pytest.raises(openai.BadRequestError) as e:
        api.client.audio.speech.create(model="speechq-tts", voice="alloy", input="Hi.", speed=9)
    assert e.value.body["param"] == "speed"
    # the worker keeps serving
    assert len(api.client.audio.speech.create(model="speechq-tts", voice="alloy", input="Still here.",
                                              response_format="pcm").read()) > 0


def test_prompt_becomes_hotwords():
    from workers.openai_api import prompt_hotwords

    assert prompt_hotwords("Okonkwo, New York; ibuprofen") == ["Okonkwo", "New York", "ibuprofen"]
    assert prompt_hotwords("A talk by Chinua Achebe about Umuofia.") == ["Chinua", "Achebe", "Umuofia"]
    assert prompt_hotwords("") == []


def test_stored_outputs_follow_the_format(api):
    """The same job through the job API: its stored file is the format asked for."""
    r = api.http.post("/v1/jobs/tts", params={"wait": 60},
                      json={"text": "Stored as flac.", "format": "flac", "sample_rate": 22050,
                            "voice": "kal16"})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["result"]["format"] == "flac" and job["result"]["audio_ref"].endswith(".flac")
    audio = api.http.get(job["audio_url"])
    assert audio.headers["content-type"] == "audio/flac"
    samples, rate = sf.read(io.BytesIO(audio.content))
    assert rate == 22050 and len(samples) / rate == pytest.approx(job["result"]["duration"], abs=0.01)
    assert np.isfinite(samples).all()

