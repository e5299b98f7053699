"""The HTTP gateway over a real socket, against a real worker."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.workers.conftest import GatewayProcess, wait_over_http

pytestmark = pytest.mark.slow
TOKEN = "test-token"


@pytest.fixture(scope="module")
def gateway(service):
    env = {**service.worker.env, "SPEECHQ_MAX_UPLOAD_MB": "0.2", "SPEECHQ_API_TOKEN": TOKEN}
    process = GatewayProcess(env).wait_ready()
    http = httpx.Client(base_url=process.base_url, headers={"authorization": f"Bearer {TOKEN}"},
                        timeout=30)
    yield http
    http.close()
    process.stop()


def test_tts_then_asr_of_its_wav(gateway):
    r = gateway.post("/v1/jobs/tts", json={"text": "The birch canoe slid on the smooth planks."})
    assert r.status_code == 202, r.text
    tts = wait_over_http(gateway, r.json()["id"])
    assert tts["state"] == "succeeded" and tts["audio_url"].endswith("/audio")
    wav = gateway.get(tts["audio_url"])
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav" and wav.content[:4] == b"RIFF"

    r = gateway.post("/v1/jobs/asr", content=wav.content, headers={"content-type": "audio/wav"})
    assert r.status_code == 202, r.text
    asr = wait_over_http(gateway, r.json()["id"])
    assert asr["state"] == "succeeded" and isinstance(asr["result"]["text"], str)
    for fmt, marker in (("txt", ""), ("json", '"text"'), ("srt", ""), ("vtt", "WEBVTT")):
        t = gateway.get(f"/v1/jobs/{asr['id']}/transcript", params={"format": fmt})
        assert t.status_code == 200 and marker in t.text
    assert gateway.get(f"/v1/jobs/{asr['id']}/transcript", params={"format": "doc"}).status_code == 422
    plain = gateway.get(f"/v1/jobs/{asr['id']}/transcript")  # the text by default
    assert plain.headers["content-type"].startswith("text/plain")
    assert plain.text == asr["result"]["text"] + "\n"

    r = gateway.post("/v1/jobs/asr", files={"file": ("speech.wav", wav.content, "audio/wav")})
    assert r.status_code == 202, r.text
    assert wait_over_http(gateway, r.json()["id"])["state"] == "succeeded"


def test_asr_hotwords_are_the_query_parameter_repeated(gateway, service, tmp_path):
    """`?hotwords=a&hotwords=b`: the job stores the list; with greedy CTC it is refused."""
    from tests.helpers import write_noise_wav

    wav = write_noise_wav(tmp_path / "clip.wav", 1.0).read_bytes()
    params = [("hotwords", "Okonkwo"), ("hotwords", "new york, ny"), ("hotword_weight", "3")]
    r = gateway.post("/v1/jobs/asr", params=params, content=wav, headers={"content-type": "audio/wav"})
    assert r.status_code == 202, r.text
    assert service.client.get(r.json()["id"]).request["options"] == {
        "hotwords": ["Okonkwo", "new york, ny"], "hotword_weight": 3.0}
    assert wait_over_http(gateway, r.json()["id"])["state"] == "succeeded"
    r = gateway.post("/v1/jobs/asr", params=params + [("decoder", "ctc")], content=wav,
                     headers={"content-type": "audio/wav"})
    assert r.status_code == 422 and "hotwords need decoder 'attention'" in r.json()["detail"]


def test_tts_jobs_choose_the_decoder_and_attention(gateway, service):
    r = gateway.post("/v1/jobs/tts", json={"text": "Said by the other model.", "decoder": "ar",
                                           "attention": "dot"})
    assert r.status_code == 202, r.text
    job = wait_over_http(gateway, r.json()["id"])
    assert job["state"] == "succeeded", job
    assert service.client.get(r.json()["id"]).request["options"] == {"decoder": "ar", "attention": "dot"}


def test_the_schema_lists_every_job_option_with_its_range(gateway):
    from pipeline.inference.options import RecognitionOptions, TTSOptions, job_fields, spec

    schema = gateway.get("/openapi.json").json()
    query = {p["name"]: p["schema"] for p in schema["paths"]["/v1/jobs/asr"]["post"]["parameters"]}
    body = schema["components"]["schemas"]["TTSJob"]["properties"]
    for cls, declared in ((RecognitionOptions, query), (TTSOptions, body)):
        for f in job_fields(cls):
            s, allowed = spec(f), declared[f.name]["anyOf"][0]
            if s.choices is not None:
                assert allowed["enum"] == list(s.choices)
            elif s.kind is tuple:  # a list of strings: repeated query parameters
                assert allowed["type"] == "array" and allowed["maxItems"] == s.max_items, f.name
                assert allowed["items"] == {"type": "string", "minLength": 1, "maxLength": s.max_chars}
            else:
                assert allowed["minimum"] == s.low, f.name
                assert allowed.get("maximum", allowed.get("exclusiveMaximum")) == s.high, f.name
            assert s.help in declared[f.name]["description"]


def test_bad_requests_get_4xx_with_a_message(gateway, service):
    assert gateway.post("/v1/jobs/tts", json={"text": "  "}).json()["detail"] == "the text is empty"
    assert gateway.post("/v1/jobs/tts", json={"text": "a" * 2001}).status_code == 422
    assert gateway.post("/v1/jobs/tts", json={}).status_code == 422
    r = gateway.post("/v1/jobs/asr", content=b"this is not audio" * 100, headers={"content-type": "audio/wav"})
    assert r.status_code == 422 and "not a readable audio file" in r.json()["detail"]
    assert gateway.post("/v1/jobs/asr", content=b"").status_code == 422
    r = gateway.post("/v1/jobs/asr", params={"lm_weight": -1}, content=b"RIFF", headers={"content-type": "audio/wav"})
    assert r.status_code == 422 and "lm_weight" in r.text
    r = gateway.post("/v1/jobs/asr", params={"beam_size": 17}, content=b"RIFF",
                     headers={"content-type": "audio/wav"})
    assert r.status_code == 422 and "beam_size" in r.text
    for views in ({"tempo": 0.4}, {"tempo_views": 0.5}, {"shift_views": 4}, {"shift_views": 1.5},
                  {"speaker_adapt_steps": 501}):
        r = gateway.post("/v1/jobs/asr", params=views, content=b"RIFF",
                         headers={"content-type": "audio/wav"})
        assert r.status_code == 422 and next(iter(views)) in r.text
    for body in ({"text": "Hi.", "attention": "dot"}, {"text": "Hi.", "decoder": "ar", "speed": 2},
                 {"text": "Hi.", "voice": "alloy"}, {"text": "Hi.", "decoder": "wavenet"}):
        assert gateway.post("/v1/jobs/tts", json=body).status_code == 422, body
    for hotwords in ({"hotwords": ""}, {"hotwords": "x" * 101}, {"hotword_weight": 21}):
        r = gateway.post("/v1/jobs/asr", params=hotwords, content=b"RIFF",
                         headers={"content-type": "audio/wav"})
        assert r.status_code == 422 and "hotword" in r.text, hotwords
    r = gateway.post("/v1/jobs/asr", params={"batch_frames": 8}, content=b"RIFF",
                     headers={"content-type": "audio/wav"})
    assert r.status_code == 422 and "batch_frames" in r.text  # not a job option
    assert gateway.get("/v1/jobs/nope").status_code == 404
    assert httpx.get(str(gateway.base_url.join("/v1/jobs/nope"))).status_code == 401  # no token


def test_an_oversize_upload_is_refused_before_it_is_stored(gateway, service):
    inputs = service.storage / "inputs"
    before = sorted(inputs.iterdir()) if inputs.exists() else []
    r = gateway.post("/v1/jobs/asr", content=b"\0" * 400_000, headers={"content-type": "audio/wav"})
    assert r.status_code == 413 and "limit of 0.2 MB" in r.json()["detail"]

    def chunked():  # no Content-Length: refused while streaming
        for _ in range(40):
            yield b"\0" * 10_000
    r = gateway.post("/v1/jobs/asr", content=chunked(), headers={"content-type": "audio/wav"})
    assert r.status_code == 413
    assert (sorted(inputs.iterdir()) if inputs.exists() else []) == before


def test_cancel_over_http(gateway, service):
    job = service.client.submit("tts", {"text": "Slow.", "_test": {"sleep": 2}})
    time.sleep(0.5)
    r = gateway.delete(f"/v1/jobs/{job.id}")
    assert r.status_code == 200
    assert wait_over_http(gateway, job.id)["state"] == "cancelled"
    assert gateway.get(f"/v1/jobs/{job.id}/audio").status_code == 409


def test_wait_answers_with_the_finished_job(gateway, service, tmp_path):
    """?wait= : the finished job (200) when it ends in time, its id (202) otherwise; the job's
    JSON holds references and URLs, not the server's paths."""
    from tests.helpers import write_noise_wav

    r = gateway.post("/v1/jobs/tts", params={"wait": 60}, json={"text": "Waited for."})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["state"] == "succeeded" and job["audio_url"] == f"/v1/jobs/{job['id']}/audio"
    assert "audio" not in job["result"] and job["result"]["audio_ref"] == f"outputs/{job['id']}.wav"
    assert str(service.storage) not in r.text

    wav = write_noise_wav(tmp_path / "clip.wav", 1.0).read_bytes()
    r = gateway.post("/v1/jobs/asr", params={"wait": 60}, content=wav,
                     headers={"content-type": "audio/wav"})
    assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text
    assert str(service.storage) not in r.text and "/tmp" not in r.text

    slow = service.client.submit("tts", {"text": "Slow.", "_test": {"sleep": 2}})
    assert slow.state == "queued"
    r = gateway.post("/v1/jobs/tts", params={"wait": 0.5}, json={"text": "Behind a slow one."})
    assert r.status_code == 202 and set(r.json()) == {"id", "state"}
    assert gateway.post("/v1/jobs/tts", params={"wait": -1}, json={"text": "Hi."}).status_code == 422


def test_waiting_requests_hold_no_threads(gateway, service):
    """Sixty `?wait=` requests queued behind a slow job wait without taking the gateway's worker
    threads: a request served by one (a job lookup) answers while all sixty still wait."""
    import asyncio

    slow = service.client.submit("tts", {"text": "Slow.", "_test": {"sleep": 3}})

    async def scenario():
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=str(gateway.base_url), headers=gateway.headers,
                                     timeout=60, limits=limits) as http:
            waits = [asyncio.create_task(http.post("/v1/jobs/tts", params={"wait": 30},
                                                   json={"text": f"Waiting {i}."}))
                     for i in range(60)]
            await asyncio.sleep(1.0)
            probe = await http.get(f"/v1/jobs/{slow.id}")
            pending = sum(not w.done() for w in waits)
            return probe, pending, await asyncio.gather(*waits)

    probe, pending, answers = asyncio.run(scenario())
    assert probe.status_code == 200 and pending == 60
    assert [a.status_code for a in answers] == [200] * 60
    assert all(a.json()["state"] == "succeeded" for a in answers)


def test_root_redirects_to_the_docs_and_health_answers(gateway):
    r = gateway.get("/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/docs"
    health = gateway.get("/health", headers={"Authorization": ""})  # a probe sends no token
    assert health.status_code == 200 and health.json() == {"status": "ok"}
