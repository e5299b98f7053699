"""WER, the PocketSphinx reference recogniser and the held-out Festival voices."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from pipeline.evaluation.judges import (
    FESTIVAL_VOICES,
    EvaluationError,
    festival_speak,
    pocketsphinx_transcribe,
    spectral_convergence,
    wer,
)
from pipeline.frontend.audio import load_audio

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")  # Debian pocketsphinx-testdata
needs_festival = pytest.mark.skipif(
    shutil.which("text2wave") is None,
    reason="apt-get install festival festvox-us-slt-hts festvox-kallpc16k")


def _librivox_references() -> dict[str, str]:
    """utterance id -> reference text, from the sphinx-style `transcription` file."""
    refs = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        m = re.match(r"<s>(.*)</s>\s*\((.+)\)", line.strip())
        if m:
            refs[m.group(2)] = m.group(1).strip()
    return refs


def test_wer_counts_edits_over_reference_words():
    assert wer(["the cat sat"], ["the cat sat"]) == 0.0
    assert wer(["the cat sat"], ["the bat sat down"]) == pytest.approx(2 / 3)
    assert wer(["a b", "c d e f"], ["a", "c d e f"]) == pytest.approx(1 / 6)  # pooled, not averaged
    assert wer(["one two"], [""]) == 1.0


def test_wer_normalises_before_scoring():
    assert wer(["Dr. Smith paid $5."], ["doctor smith paid five dollars"]) == 0.0
    assert wer(["It's 10:30, isn't it?"], ["it's ten thirty isn't it"]) == 0.0


def test_wer_rejects_mismatched_or_empty_references():
    with pytest.raises(ValueError):
        wer(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        wer(["", "..."], ["a", "b"])


def test_spectral_convergence_ignores_gain_and_extra_frames():
    torch.manual_seed(0)
    mel = torch.randn(50, 80)
    assert spectral_convergence(mel, mel + 0.7) == pytest.approx(0.0, abs=1e-6)  # x e^0.7
    longer = torch.cat([mel, torch.randn(5, 80)])
    assert spectral_convergence(mel, longer) == pytest.approx(0.0, abs=1e-6)
    assert spectral_convergence(mel, torch.randn(50, 80)) > 0.5


@pytest.fixture(scope="module")
def librivox_clip() -> tuple[Path, str, str]:
    """The shortest LibriVox clip: its path, reference text and PocketSphinx's reading."""
    if not (LIBRIVOX / "transcription").exists():
        pytest.skip("apt-get install pocketsphinx-testdata")
    path = min(LIBRIVOX.glob("*.wav"), key=lambda p: p.stat().st_size)
    return path, _librivox_references()[path.stem], pocketsphinx_transcribe(path)


def test_pocketsphinx_reads_librivox_speech(librivox_clip):
    _, reference, hypothesis = librivox_clip
    assert hypothesis and hypothesis == hypothesis.lower()
    assert wer([reference], [hypothesis]) < 0.6  # measured 0.38


def test_pocketsphinx_takes_waveforms_at_any_rate(librivox_clip):
    path, _, from_file = librivox_clip
    at_22k = AF.resample(load_audio(path, 16_000), 16_000, 22_050)
    assert wer([from_file], [pocketsphinx_transcribe(at_22k, 22_050)]) < 0.3


@needs_festival
@pytest.mark.parametrize("voice", sorted(FESTIVAL_VOICES))
def test_festival_speaks_the_held_out_voices(voice, tmp_path):
    text = "Glue the sheet to the dark blue background."
    out = festival_speak(text, voice, tmp_path / f"{voice}.wav")
    info = sf.info(str(out))
    assert info.channels == 1 and info.samplerate >= 16_000 and 1.0 < info.duration < 6.0
    assert wer([text], [pocketsphinx_transcribe(out)]) < 0.6  # measured 0.12 (slt), 0.38 (kal)


def test_festival_rejects_unknown_voices(tmp_path):
    with pytest.raises(EvaluationError, match="unknown Festival voice"):
        festival_speak("hello", "voice_nobody", tmp_path / "x.wav")


def test_noisy_set_adds_seeded_noise_at_the_asked_snr(tmp_path):
    from pipeline.evaluation.evalsets import EvalItem, noisy_set
    from pipeline.frontend.audio import save_wav

    t = torch.arange(16_000) / 16_000
    items = []
    for name, f in (("a", 300.0), ("b", 500.0)):
        save_wav(tmp_path / f"{name}.wav", 0.5 * torch.sin(2 * torch.pi * f * t), 16_000)
        items.append(EvalItem(tmp_path / f"{name}.wav", "some words", "tone"))
    noisy = noisy_set(items, 20.0, out_dir=tmp_path / "eval")
    assert [n.text for n in noisy] == ["some words"] * 2 and noisy[0].audio.parent.name == "snr-20"
    noises = []
    for item, n in zip(items, noisy):
        clean, mixed = (torch.tensor(sf.read(path, dtype="float32")[0]) for path in (item.audio, n.audio))
        noise = mixed / (mixed @ clean / (clean @ clean)) - clean  # at the clean clip's level
        snr = 10 * torch.log10(clean.pow(2).sum() / noise.pow(2).sum())
        assert abs(float(snr) - 20.0) < 0.2
        noises.append(noise)
    assert float(torch.corrcoef(torch.stack(noises))[0, 1]) < 0.1  # each clip its own noise
    again = noisy_set(items, 20.0, out_dir=tmp_path / "eval-2")
    assert (sf.read(again[0].audio)[0] == sf.read(noisy[0].audio)[0]).all()
