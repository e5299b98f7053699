"""Recorded speech from Debian packages as manifests: transcripts read, non-speech left out."""

import gzip

import pytest
import torch

from pipeline.data import recorded
from pipeline.frontend.audio import save_wav


def test_asterisk_prompts_become_utterances_without_tones_or_silences(tmp_path):
    sounds = tmp_path / "sounds"
    for name in ("digits/7", "agent-pass", "beep", "silence/1"):
        save_wav(sounds / f"{name}.wav", torch.full((4000,), 0.1), 8000)
    text = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(text, "wt") as f:
        f.write("; Core Asterisk Sounds in English\n\n"
                "digits/7: seven\n"
                "agent-pass: Please enter your password followed by the pound key.\n"
                "beep: [this is a simple beep tone]\n"
                "silence/1: (1 second of silence)\n"
                "missing-file: Not on disk.\n")
    utterances = recorded.asterisk_utterances(sounds, text)
    assert [(u.id, u.text) for u in utterances] == [
        ("asterisk-digits-7", "seven"),
        ("asterisk-agent-pass", "Please enter your password followed by the pound key.")]
    assert utterances[0].duration == pytest.approx(0.5) and utterances[0].audio.endswith("7.wav")


def test_a_missing_package_is_named(tmp_path):
    with pytest.raises(recorded.RecordedError, match="asterisk-core-sounds-en-wav"):
        recorded.asterisk_utterances(tmp_path / "nope", tmp_path / "nope.txt.gz")
