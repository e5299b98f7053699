"""Recorded human speech that Debian ships, as training manifests.

The corpus voices are all synthetic; a recogniser that has heard no person stumbles on people.
Debian packages a few collections of real recordings with their transcripts and a licence that
allows training:

- `asterisk`: the Asterisk PBX's core English prompts (`asterisk-core-sounds-en-wav`, recorded
  by Allison Smith, CC BY-SA 3.0): about 570 telephone prompts, digits and letters, 8 kHz,
  transcribed in `core-sounds-en.txt`.

FSDD and pocketsphinx-testdata are how real speech is measured here and never join a corpus.

    manifest = write_manifest("asterisk", Path("data/asterisk"))
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import soundfile as sf

from pipeline.data import manifests
from pipeline.data.manifests import Utterance
from pipeline.frontend.text import words_for_scoring

ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SOURCES = {"asterisk": "asterisk-core-sounds-en-wav"}  # source -> the Debian package to install


class RecordedError(ValueError):
    pass


def asterisk_utterances(sounds: Path = ASTERISK_SOUNDS, text: Path = ASTERISK_TEXT) -> list[Utterance]:
    """Every transcribed prompt with a wav: `name: Transcript.` lines of the transcript file;
    descriptions in [], <> or () (tones, beeps, silences) are dropped, and lines that are
    nothing else."""
    if not text.is_file() or not sounds.is_dir():
        raise RecordedError(f"{text} or {sounds} is missing: apt-get install {SOURCES['asterisk']}")
    opener = gzip.open if text.suffix == ".gz" else open
    with opener(text, "rt", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        m = re.match(r"^([\w/.-]+):\s*(.*)$", line)
        if not m or line.startswith(";"):
            continue
        name, transcript = m.groups()
        transcript = re.sub(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)", " ", transcript).strip()
        audio = sounds / f"{name}.wav"
        if not words_for_scoring(transcript) or not audio.is_file():
            continue
        info = sf.info(audio)
        out.append(Utterance(id=f"asterisk-{name.replace('/', '-')}", audio=str(audio),
                             text=transcript, duration=info.frames / info.samplerate,
                             speaker="asterisk-allison"))
    return out


def write_manifest(source: str, out: Path) -> Path:
    """`out/manifest.jsonl` for one source of recorded speech (`SOURCES`), its audio where the
    package put it."""
    readers = {"asterisk": asterisk_utterances}
    if source not in readers:
        raise RecordedError(f"unknown source {source!r}; one of {sorted(readers)}")
    return manifests.write_manifest(out / "manifest.jsonl", readers[source]())
