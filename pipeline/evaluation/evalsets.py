"""Evaluation sets, built on demand and cached under `data/eval/`.

- Harvard sentences (never in training text) spoken by voices no model trained on: Festival's
  `cmu_us_slt_arctic_hts` and `kal_diphone`, and espeak-ng's `en-gb-x-gbclan` (Lancaster).
- The same sentences from flite's slt, the TTS teacher voice, for reference scores.
- Real read speech: the five LibriVox clips of Debian's pocketsphinx-testdata.
- Any of these with white noise added at a given SNR (`noisy_set`), for robustness.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio.functional as AF

from pipeline.checkpoints import REPO_ROOT
from pipeline.data.corpus import (
    CORPUS_SAMPLE_RATE,
    HARVARD,
    Voice,
    read_harvard,
    speak,
    utterance_id,
)
from pipeline.evaluation.judges import festival_speak
from pipeline.frontend.audio import load_audio, save_wav

EVAL_DIR = REPO_ROOT / "data" / "eval"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
HELD_OUT_VOICES = ("festival:cmu_us_slt_arctic_hts", "festival:kal_diphone", "espeak-ng:en-gb-x-gbclan")


@dataclass(frozen=True)
class EvalItem:
    audio: Path
    text: str
    voice: str


def parse_lists(spec: str) -> list[int]:
    """A Harvard list range as the benchmarks take it: "1-6" -> [1, ..., 6], "7" -> [7]."""
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def harvard_lists(lists: range | list[int]) -> list[str]:
    """Sentences of the given Harvard lists (1-based, 10 sentences each)."""
    sentences = read_harvard(HARVARD)
    return [s for n in lists for s in sentences[(n - 1) * 10: n * 10]]


def speak_set(sentences: list[str], voice_spec: str, out_dir: Path = EVAL_DIR) -> list[EvalItem]:
    """Each sentence spoken by `voice_spec` ('festival:<voice>', 'flite:slt', 'espeak-ng:<voice>'),
    reusing files already there."""
    engine, _, name = voice_spec.partition(":")
    items = []
    for text in sentences:
        if engine == "festival":
            slug = re.sub(r"[^a-z0-9]+", "-", voice_spec.lower())
            path = out_dir / slug / f"{utterance_id(Voice('flite', 'slt'), text).split('-')[-1]}.wav"
            if not path.exists():
                festival_speak(text, name, path)
        else:
            voice = Voice(engine, name)  # built directly: held-out espeak voices are allowed here
            path = out_dir / voice.slug / f"{utterance_id(voice, text)}.wav"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                speak(voice, text, path)
        items.append(EvalItem(path, text, voice_spec))
    return items


def librivox_set(root: Path = LIBRIVOX) -> list[EvalItem]:
    """The LibriVox clips and their transcripts ('<s> words </s> (id)' lines)."""
    items = []
    for line in (root / "transcription").read_text().splitlines():
        m = re.match(r"<s>(.*)</s>\s*\((.+)\)", line.strip())
        if m:
            items.append(EvalItem(root / f"{m.group(2)}.wav", m.group(1).strip(), "librivox"))
    return items


def noisy_set(items: list[EvalItem], snr_db: float, out_dir: Path = EVAL_DIR) -> list[EvalItem]:
    """The same utterances with white noise added at `snr_db` (torchaudio's `add_noise`, over
    each whole clip), written once under `out_dir/snr-<dB>/`; the noise is seeded by the clip's
    name, so every run and every system hears the same noisy audio."""
    rate = CORPUS_SAMPLE_RATE
    folder = out_dir / f"snr-{snr_db:g}"
    noisy = []
    for item in items:
        key = hashlib.sha1(f"{item.voice}/{item.audio.name}".encode()).hexdigest()[:16]
        path = folder / f"{key}.wav"
        if not path.exists():
            wav = load_audio(item.audio, rate)
            noise = torch.randn(wav.shape, generator=torch.Generator().manual_seed(int(key, 16)))
            mixed = AF.add_noise(wav[None], noise[None], torch.tensor([float(snr_db)]))[0]
            save_wav(path, mixed * (0.95 / mixed.abs().max()), rate)  # no clipping
        noisy.append(EvalItem(path, item.text, item.voice))
    return noisy
