"""Evaluation sets, built on demand and cached under `data/eval/`.

- Harvard sentences (never in training text) spoken by voices no model trained on: Festival's
  `cmu_us_slt_arctic_hts` and `kal_diphone`, and espeak-ng's `en-gb-x-gbclan` (Lancaster).
- The same sentences from flite's slt, the TTS teacher voice, for reference scores.
- Real read speech: the five LibriVox clips of Debian's pocketsphinx-testdata.
- Real spoken digits: the Free Spoken Digit Dataset's development speakers (`fsdd_set`); and
  pocketsphinx-testdata's other recorded clips with a transcript (`pocketsphinx_clips`).
- Any of these with white noise added at a given SNR (`noisy_set`), for robustness.
"""

from __future__ import annotations

import hashlib
import os
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
POCKETSPHINX_DATA = LIBRIVOX.parent  # Debian pocketsphinx-testdata
HELD_OUT_VOICES = ("festival:cmu_us_slt_arctic_hts", "festival:kal_diphone", "espeak-ng:en-gb-x-gbclan")
# the Free Spoken Digit Dataset's development speakers (shared/data/fsdd-dev/README.md)
FSDD = REPO_ROOT.parent / "shared" / "data" / "fsdd-dev" / "recordings"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# headerless clips -> the transcript pocketsphinx's own tests assert for them (cython/test/
# decoder_test.py for goforward, the SWIG Python test for dhd.2934z, whose TIDIGITS name spells
# its digits); numbers.raw and something.raw have none anywhere in the package, so are left out
POCKETSPHINX_RAW = {"goforward.raw": "go forward ten meters",
                    "tidigits/dhd.2934z.raw": "two nine three four zero"}
POCKETSPHINX_RAW_RATE = 16_000  # 16-bit mono little-endian PCM, as pocketsphinx's tests read it


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
    """The LibriVox clips and their transcripts."""
    return _sphinx_transcription(root / "transcription", "librivox")


def _sphinx_transcription(path: Path, voice: str) -> list[EvalItem]:
    """A sphinx-style transcription file's '<s> words </s> (id)' lines, each naming id.wav
    beside it."""
    items = []
    for line in path.read_text().splitlines():
        m = re.match(r"<s>(.*)</s>\s*\((.+)\)", line.strip())
        if m:
            items.append(EvalItem(path.parent / f"{m.group(2)}.wav", m.group(1).strip(), voice))
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



def fsdd_set(root: Path | None = None) -> list[EvalItem]:
    """The Free Spoken Digit Dataset's development recordings, `{digit}_{speaker}_{take}.wav`
    (8 kHz, trimmed close to the word): the reference is the digit's English word, the voice the
    speaker. Ordered by speaker, then take, then digit, so a speaker's first 10 x k items are k
    takes of every digit.

    A development set: for judging a model on real voices, never for training or adapting one.
    `root`: the recordings folder (default: $SPEECHQ_FSDD, else shared/data/fsdd-dev/recordings
    beside the repository).
    """
    root = Path(root or os.environ.get("SPEECHQ_FSDD") or FSDD)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no FSDD recordings folder (set SPEECHQ_FSDD to it)")
    keyed = []
    for path in root.glob("*.wav"):
        m = re.fullmatch(r"(\d)_([A-Za-z]+)_(\d+)\.wav", path.name)
        if m:
            digit, speaker, take = int(m.group(1)), m.group(2), int(m.group(3))
            keyed.append(((speaker, take, digit), EvalItem(path, DIGIT_WORDS[digit], speaker)))
    if not keyed:
        raise FileNotFoundError(f"{root}: no {{digit}}_{{speaker}}_{{take}}.wav recordings in it")
    return [item for _, item in sorted(keyed, key=lambda k: k[0])]


def pocketsphinx_clips(root: Path = POCKETSPHINX_DATA, out_dir: Path = EVAL_DIR) -> list[EvalItem]:
    """pocketsphinx-testdata's recorded clips with a transcript, other than LibriVox's
    (`librivox_set`): the five playing-card phrases (cards/cards.transcription), a command
    (goforward.raw) and a digit string (tidigits/dhd.2934z.raw). The raw clips are written once
    as wav under `out_dir/pocketsphinx/`; the voice is the clip's group (cards, goforward,
    tidigits). Empty where the package is not installed."""
    cards = root / "cards" / "cards.transcription"
    items = _sphinx_transcription(cards, "cards") if cards.is_file() else []
    for name, text in POCKETSPHINX_RAW.items():
        raw = root / name
        if not raw.is_file():
            continue
        path = out_dir / "pocketsphinx" / (Path(name).stem + ".wav")
        if not path.exists():
            pcm = torch.frombuffer(bytearray(raw.read_bytes()), dtype=torch.int16)
            save_wav(path, pcm.float() / 32768, POCKETSPHINX_RAW_RATE)
        items.append(EvalItem(path, text, Path(name).parent.name or Path(name).stem))
    return items
