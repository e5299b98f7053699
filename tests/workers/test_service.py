"""Jobs through the real Redis and a real worker: round trip, batching, idempotent ids,
cancellation and bad input. The models are tiny and random; quality is not the point."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import soundfile as sf

from tests.workers.conftest import write_noise_wav

pytestmark = pytest.mark.slow


def test_tts_job_writes_a_wav_into_storage(service):
    job = service.client.wait(service.client.submit_tts("The birch canoe slid on the smooth planks.").id, 60)
    assert job.state == "succeeded", job.error
    audio = service.client.audio_path(job)
    assert audio.is_file() and audio.is_relative_to(service.storage)
    info = sf.info(audio)
    assert info.samplerate == job.result["sample_rate"]
    assert job.result["duration"] == pytest.approx(info.frames / info.samplerate, abs=1e-3)
    assert job.attempts == 1 and job.completions == 1


def test_asr_job_transcribes_the_tts_output(service):
    c = service.client
    tts = c.wait(c.submit_tts("Glue the sheet to the dark blue background.").id, 60)
    asr = c.wait(c.submit_asr(c.audio_path(tts)).id, 60)
    assert asr.state == "succeeded", asr.error
    assert isinstance(asr.result["text"], str)
    assert {"word", "start", "end", "confidence"} <= set(asr.result["words"][0]) if asr.result["words"] else True
    assert asr.request["audio"].startswith("outputs/")  # a file inside storage is used where it is


def test_waiting_jobs_run_as_batches(service, tmp_path):
    c = service.client
    files = [write_noise_wav(tmp_path / f"{i}.wav", 0.5 + 0.1 * i, seed=i) for i in range(12)]
    c.submit("tts", {"text": "Hold.", "_test": {"sleep": 1.0}})  # keeps the worker busy while we queue
    ids = [c.submit_asr(f).id for f in files]
    jobs = [c.wait(i, 60) for i in ids]
    assert all(j.state == "succeeded" for j in jobs), [j.error for j in jobs]
    assert max(j.batch_size for j in jobs) > 1
    assert all(j.completions == 1 for j in jobs)


def test_a_resubmitted_id_returns_the_existing_job(service):
    """The same request under the same id is a retry: the job that exists. Another request, or
    another submitter, under it is refused."""
    from workers.client import JobIdConflict

    c = service.client
    job_id = f"idem-{uuid.uuid4().hex}"
    first = c.wait(c.submit_tts("Once only.", job_id=job_id).id, 60)
    again = c.submit_tts("Once only.", job_id=job_id)
    assert again.state == "succeeded" and again.request == first.request
    time.sleep(0.5)
    assert c.get(job_id).completions == 1 and c.get(job_id).finished_at == first.finished_at
    with pytest.raises(JobIdConflict, match="different request"):
        c.submit_tts("Something else entirely.", job_id=job_id)
    with pytest.raises(JobIdConflict, match="different request"):
        c.submit("asr", {"audio": "x.wav"}, job_id=job_id)
    with pytest.raises(JobIdConflict, match="cannot be used"):
        c.submit_tts("Once only.", job_id=job_id, submitter="someone")


def _wait_running(c, job_id, timeout=30):
    deadline = time.monotonic() + timeout
    while c.get(job_id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.02)


def test_cancel_a_queued_job_and_a_running_one(service):
    c = service.client
    running = c.submit("tts", {"text": "Slow one.", "_test": {"sleep": 3}})
    _wait_running(c, running.id)
    time.sleep(0.5)  # past the batch's collection window (20 ms): what comes next waits in the queue
    queued = c.submit_tts("Never runs.")
    assert c.cancel(queued.id).state == "cancelled"
    assert c.cancel(running.id).state == "running"  # asked to stop; it stops at its next check
    assert c.wait(running.id, 30).state == "cancelled"
    assert c.wait(queued.id, 5).state == "cancelled" and c.get(queued.id).started_at is None
    assert not c.storage.output_path(running.id).exists()


@pytest.mark.parametrize("request_, message", [
    ({"text": ""}, "the text is empty"),
    ({"text": "   "}, "the text is empty"),
    ({"text": "word " * 500}, "the limit is 2000"),
    ({"text": 42}, "text must be a string"),
    ({"text": "Fine text.", "options": {"speed": 0}}, "speed must be a number from 0.25 to 4, not 0"),
    ({"text": "Fine text.", "options": {"decoder": "ar", "speed": 2}}, "speed control needs decoder 'nat'"),
    ({"text": "Fine text.", "options": {"pitch": 2}}, "unknown option pitch"),
    ({"text": "Fine text.", "options": {"voice": "x"}}, "voice must be one of 'slt', 'awb'"),
    ({"text": "Fine text.", "options": {"voice": "awb"}}, "voice must be one of slt for this model"),
    ({"text": "Fine text.", "options": {"format": "opus", "sample_rate": 22050}},
     "format opus runs at sample_rate"),
    ({"text": "Fine text.", "options": "fast"}, "options are an object"),
])
def test_bad_text_fails_the_job_with_a_clear_message(service, request_, message):
    job = service.client.wait(service.client.submit("tts", request_).id, 60)
    assert job.state == "failed" and message in job.error


def test_bad_audio_fails_the_job_with_a_clear_message(service, tmp_path):
    c = service.client
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40)
    text_file = tmp_path / "notes.wav"
    text_file.write_text("this is not audio at all\n" * 20)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    from pipeline.frontend.audio import AudioError

    for path in (corrupt, text_file, empty):  # the client refuses them before copying
        with pytest.raises(AudioError, match=path.name):
            c.submit_asr(path)

    def stored(path):  # past the client, as a careless one would send it
        ref = c.storage.put_file(path, f"bad-{uuid.uuid4().hex}")
        return c.submit("asr", {"audio": ref, "name": path.name}).id

    cases = {
        stored(corrupt): "corrupt.wav",
        stored(text_file): "not a readable audio file",
        stored(empty): "empty",
        c.submit("asr", {"audio": "../../../etc/passwd"}).id: "outside the storage directory",
        c.submit("asr", {"audio": "/etc/hostname"}).id: "outside the storage directory",
        c.submit("asr", {"audio": "inputs/missing.wav"}).id: "no such file",
    }
    good = c.submit_asr(write_noise_wav(tmp_path / "good.wav"))
    for job_id, message in cases.items():
        job = c.wait(job_id, 60)
        assert job.state == "failed", job.to_dict()
        assert message in job.error, job.error
    assert c.wait(good.id, 60).state == "succeeded"  # the worker kept serving


def test_a_pickle_message_is_refused_and_the_worker_keeps_serving(service):
    import pickle

    from kombu import Connection

    c = service.client
    job_id = uuid.uuid4().hex
    c.store.create(job_id, "tts", {"text": "Pickled."})
    body = pickle.dumps(((job_id,), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}))
    with Connection(service.env["SPEECHQ_REDIS_URL"]) as conn:
        conn.Producer().publish(body, routing_key="tts", exchange="tts", content_type="application/x-python-serialize",
                                content_encoding="binary", headers={"id": job_id, "task": "speechq.tts", "lang": "py"})
    after = c.wait(c.submit_tts("Still serving.").id, 60)
    assert after.state == "succeeded"
    job = c.wait(job_id, 10)
    assert job.state == "failed" and "workers accept JSON only" in job.error and job.attempts == 0


def test_unknown_job(service):
    from workers.client import JobNotFound

    with pytest.raises(JobNotFound, match="no job"):
        service.client.get("no-such-job")


def _cli(service, *args):
    import subprocess

    from tests.workers.conftest import REPO, speechq_command

    out = subprocess.run(speechq_command() + list(args), cwd=REPO, env=service.worker.env,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "", out.stderr


def test_cli_submit_status_result_cancel(service, tmp_path):
    rc, last, err = _cli(service, "submit", "tts", "The cli speaks.", "--wait", "--json")
    tts = json.loads(last)
    assert rc == 0 and tts["state"] == "succeeded", err
    assert tts["result"]["audio"].endswith(".wav") and tts["result"]["duration"] > 0

    rc, last, _ = _cli(service, "submit", "asr", tts["result"]["audio"], "--lm-weight", "0.5", "--wait", "--json")
    asr = json.loads(last)
    assert rc == 0 and asr["state"] == "succeeded" and "text" in asr["result"] and "words" in asr["result"]
    request = service.client.get(asr["id"]).request
    assert request["options"] == {"lm_weight": 0.5}  # the rest left to the worker's defaults
    rc, _, err = _cli(service, "submit", "asr", tts["result"]["audio"], "--ctc-weight", "1.5")
    assert rc == 2 and "--ctc-weight" in err

    rc, last, err = _cli(service, "submit", "tts", "Said by the other model.", "--decoder", "ar",
                         "--attention", "dot", "--wait", "--json")
    ar = json.loads(last)
    assert rc == 0 and ar["state"] == "succeeded", err
    assert service.client.get(ar["id"]).request["options"] == {"decoder": "ar", "attention": "dot"}
    rc, last, _ = _cli(service, "submit", "tts", "Not so.", "--attention", "dot")
    assert rc == 2 and "attention applies to decoder 'ar'" in last

    rc, last, _ = _cli(service, "status", asr["id"], "--json")
    assert json.loads(last)["state"] == "succeeded"
    rc, last, _ = _cli(service, "result", tts["id"])
    assert json.loads(last)["audio"] == tts["result"]["audio"]

    rc, last, _ = _cli(service, "submit", "tts", "", "--wait", "--json")  # refused, never queued
    assert rc == 2 and json.loads(last)["error"] == "the text is empty"
    rc, last, _ = _cli(service, "submit", "tts", "a" * 2001, "--json")
    assert rc == 2 and json.loads(last)["error"] == "the text has 2001 characters; the limit is 2000"
    rc, last, _ = _cli(service, "submit", "asr", str(tmp_path / "missing.wav"), "--json")
    assert rc == 2 and json.loads(last)["state"] == "failed" and "no such file" in json.loads(last)["error"]
    rc, last, _ = _cli(service, "status", "no-such-job", "--json")
    assert rc == 2 and "no job" in json.loads(last)["error"]

    rc, last, _ = _cli(service, "submit", "tts", "Queued then cancelled.", "--json", "--id", "cli-cancel-1")
    assert json.loads(last)["id"] == "cli-cancel-1" and json.loads(last)["state"] in ("queued", "running", "succeeded")
    rc, last, _ = _cli(service, "cancel", "cli-cancel-1", "--json")
    assert json.loads(last)["state"] in ("cancelled", "running", "succeeded")
