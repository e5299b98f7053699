"""ASR jobs through the queue with the real `pipeline.recognizer.Recognizer` (a tiny random
checkpoint): batched, both decoders, a bad file failing alone."""

from __future__ import annotations

import pytest

from tests.workers.conftest import (
    flush,
    make_tiny_asr_checkpoint,
    service_environment,
    settings_for,
    write_noise_wav,
)

pytestmark = pytest.mark.slow


def test_real_recognizer_jobs(tmp_path, start_worker):
    from workers.client import Client

    flush()
    make_tiny_asr_checkpoint(tmp_path / "checkpoints" / "asr.pt")
    env = service_environment(tmp_path, recognizer="pipeline.recognizer:Recognizer")
    start_worker(env, queues="asr")
    client = Client(settings_for(env))
    clips = [write_noise_wav(tmp_path / f"{i}.wav", 1.0 + 0.2 * i, seed=i) for i in range(6)]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 50)
    ids = [client.submit_asr(c, beam_size=2, decoder=("attention", "ctc")[i % 2]).id for i, c in enumerate(clips)]
    bad_id = client.submit_asr(bad).id
    jobs = [client.wait(i, 120) for i in ids]
    assert [j.state for j in jobs] == ["succeeded"] * len(ids), [j.error for j in jobs]
    assert all(isinstance(j.result["text"], str) and "words" in j.result for j in jobs)
    failed = client.wait(bad_id, 60)
    assert failed.state == "failed" and "bad.wav" in failed.error
