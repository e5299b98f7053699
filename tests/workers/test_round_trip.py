"""The product's main path on the shipped models: a TTS job's wav, sent back as an ASR job,
reads as the prompt (WER <= 0.3 over Harvard list 1), through the real Redis and a real worker."""

from __future__ import annotations

import pytest

from pipeline.checkpoints import REPO_ROOT
from pipeline.evaluation.evalsets import harvard_lists
from pipeline.evaluation.judges import wer
from tests.workers.conftest import flush, service_environment, settings_for

SHIPPED = REPO_ROOT / "checkpoints"
PROMPTS = harvard_lists([1])  # ten sentences: the standard intelligibility list, never trained on

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ((SHIPPED / "tts-nat.pt").exists() and (SHIPPED / "asr.pt").exists()),
                       reason="no shipped TTS and ASR checkpoints in checkpoints/"),
]


def test_tts_then_asr_reads_back_the_prompts(tmp_path, start_worker):
    from workers.client import Client

    flush()
    env = service_environment(tmp_path, checkpoints=SHIPPED, recognizer="pipeline.inference.recognizer:Recognizer")
    start_worker(env)
    client = Client(settings_for(env))
    tts = [client.wait(client.submit_tts(p).id, timeout=300) for p in PROMPTS]
    assert [j.state for j in tts] == ["succeeded"] * len(PROMPTS), [j.error for j in tts]
    asr = [client.wait(client.submit_asr(client.audio_path(j)).id, timeout=300) for j in tts]
    assert [j.state for j in asr] == ["succeeded"] * len(PROMPTS), [j.error for j in asr]
    hyps = [j.result["text"] for j in asr]
    assert wer(PROMPTS, hyps) <= 0.3, list(zip(PROMPTS, hyps))


def test_an_8_khz_clip_trimmed_to_the_word_is_transcribed(tmp_path, start_worker):
    """Telephone-rate audio cut to the word, as real recordings often come (FSDD's digits): a TTS
    job's 8 kHz wav with its pauses cut off, sent as an ASR job, succeeds with word times
    inside the clip."""
    import soundfile as sf
    import torch

    from pipeline.train.augment import trim_silence
    from workers.client import Client

    flush()
    env = service_environment(tmp_path, checkpoints=SHIPPED, recognizer="pipeline.inference.recognizer:Recognizer")
    start_worker(env)
    client = Client(settings_for(env))
    tts = client.wait(client.submit_tts("Seven.", sample_rate=8_000).id, timeout=300)
    assert tts.state == "succeeded", tts.error
    wav, rate = sf.read(client.audio_path(tts), dtype="float32")
    trimmed = trim_silence(torch.from_numpy(wav), rate).numpy()
    assert rate == 8_000 and len(trimmed) < 0.9 * len(wav)
    clip = tmp_path / "seven-8k.wav"
    sf.write(clip, trimmed, rate)
    asr = client.wait(client.submit_asr(clip).id, timeout=300)
    assert asr.state == "succeeded", asr.error
    words = asr.result["words"]
    assert asr.result["text"].strip() and words
    assert all(0 <= w["start"] <= w["end"] <= len(trimmed) / rate + 0.05 for w in words)
