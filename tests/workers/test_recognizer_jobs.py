"""ASR jobs through the queue with the real `pipeline.inference.recognizer.Recognizer` (a tiny random
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
    env = service_environment(tmp_path, recognizer="pipeline.inference.recognizer:Recognizer")
    start_worker(env, queues="asr")
    client = Client(settings_for(env))
    clips = [write_noise_wav(tmp_path / f"{i}.wav", 1.0 + 0.2 * i, seed=i) for i in range(6)]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 50)
    ids = [client.submit_asr(c, beam_size=2, decoder=("attention", "ctc")[i % 2]).id for i, c in enumerate(clips)]
    with pytest.raises(ValueError, match="bad.wav"):  # refused before it is copied
        client.submit_asr(bad)
    ref = client.storage.put_file(bad, "bad")  # past the client: the worker refuses it too
    bad_id = client.submit("asr", {"audio": ref, "name": str(bad)}).id
    jobs = [client.wait(i, 120) for i in ids]
    assert [j.state for j in jobs] == ["succeeded"] * len(ids), [j.error for j in jobs]
    assert all(isinstance(j.result["text"], str) and "words" in j.result for j in jobs)
    failed = client.wait(bad_id, 60)
    assert failed.state == "failed" and "bad.wav" in failed.error


def test_beam_search_weights_reach_the_recognizer(tmp_path, start_worker):
    """A job's options decode it as `Recognizer.transcribe` does with them; jobs with different
    options are decoded apart; a bad option fails only its job, with that option's message."""
    from pipeline.inference.recognizer import Recognizer
    from workers.client import Client

    flush()
    checkpoint = make_tiny_asr_checkpoint(tmp_path / "checkpoints" / "asr.pt")
    (tmp_path / "checkpoints" / "lexicon.txt").write_text("the\na\nof\n")
    env = service_environment(tmp_path, recognizer="pipeline.inference.recognizer:Recognizer")
    start_worker(env, queues="asr")
    client = Client(settings_for(env))
    clip = write_noise_wav(tmp_path / "clip.wav", 1.5, seed=3)
    local = Recognizer.load(checkpoint, lexicon=tmp_path / "checkpoints" / "lexicon.txt")
    settings = [{"ctc_weight": 0.0, "lexicon_weight": 0.0},
                {"ctc_weight": 1.0, "lexicon_weight": 50.0, "rare_word_weight": 5.0,
                 "tempo": 0.8, "tempo_views": 0.0, "shift_views": 0},
                {"speaker_adapt_steps": 20}, {"initial_silence_seconds": 1.0},
                {"hotwords": ["the planks", "a birch canoe"], "hotword_weight": 20.0}]
    expected = [local.transcribe(clip, beam_size=2, **w).text for w in settings]
    # else the test could not tell the settings apart
    plain = local.transcribe(clip, beam_size=2).text
    assert expected[0] != expected[1] and plain not in (expected[2], expected[3], expected[4])
    assert "the planks" in expected[4] or "a birch canoe" in expected[4]  # a hotword, heard
    ids = [client.submit_asr(clip, beam_size=2, **w).id for w in settings]
    audio = client.get(ids[0]).request["audio"]
    bad = {client.submit("asr", {"audio": audio, "options": w}).id: message
           for w, message in (({"lm_weight": -1}, "lm_weight must be a number from 0 to 10, not -1"),
                              ({"ctc_weight": 2}, "ctc_weight must be a number from 0 to 1"),
                              ({"lexicon_weight": "high"}, "lexicon_weight must be a number"),
                              ({"tempo_views": 0.5}, "tempo_views must be a number from 0 to"),
                              ({"tempo": 3}, "tempo must be a number from 0.5 to 2"),
                              ({"speaker_adapt_steps": 2.5}, "speaker_adapt_steps must be an int"),
                              ({"shift_views": 1.5}, "shift_views must be an integer from 0 to 3"),
                              ({"beam_size": 17}, "beam_size must be an integer from 1 to 16"),
                              ({"hotwords": "planks"}, "hotwords must be a list of at most 1000"),
                              ({"hotwords": ["planks"], "decoder": "ctc"},
                               "hotwords need decoder 'attention'"),
                              ({"batch_frames": 1}, "unknown option batch_frames"))}
    jobs = [client.wait(i, 120) for i in ids]
    assert [j.result["text"] for j in jobs] == expected, [j.error for j in jobs]
    for job_id, message in bad.items():
        job = client.wait(job_id, 60)
        assert job.state == "failed" and message in job.error
