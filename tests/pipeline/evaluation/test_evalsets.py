"""The real-speech evaluation sets: FSDD's digits and pocketsphinx-testdata's recorded clips."""

from __future__ import annotations

import math

import pytest
import soundfile as sf
import torch

from pipeline.evaluation.evalsets import (
    DIGIT_WORDS,
    POCKETSPHINX_DATA,
    POCKETSPHINX_RAW_RATE,
    fsdd_set,
    librivox_set,
    pocketsphinx_clips,
)
from pipeline.frontend.audio import save_wav

FSDD_RATE = 8_000


def _tone(seconds: float, rate: int) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return 0.5 * torch.sin(2 * math.pi * 440 * t)


@pytest.fixture
def fsdd_folder(tmp_path):
    """Two speakers, takes 0, 1 and 10 (so that 10 sorts after 1 as a number, not text) of
    digits 0, 3 and 9, and files that are not recordings."""
    root = tmp_path / "recordings"
    for speaker in ("lucas", "george"):
        for take in (10, 0, 1):
            for digit in (9, 0, 3):
                save_wav(root / f"{digit}_{speaker}_{take}.wav", _tone(0.2, FSDD_RATE), FSDD_RATE)
    save_wav(root / "notes_george_0.wav", _tone(0.2, FSDD_RATE), FSDD_RATE)
    (root / "README.md").write_text("not audio")
    return root


def test_fsdd_set_parses_names_into_words_and_speakers(fsdd_folder):
    items = fsdd_set(fsdd_folder)
    assert len(items) == 18  # 2 speakers x 3 takes x 3 digits; the other files skipped
    for item in items:
        digit, speaker, _ = item.audio.stem.split("_")
        assert item.text == DIGIT_WORDS[int(digit)]
        assert item.voice == speaker
        assert item.audio.parent == fsdd_folder
    assert DIGIT_WORDS[0] == "zero" and DIGIT_WORDS[9] == "nine"


def test_fsdd_set_orders_by_speaker_take_then_digit(fsdd_folder):
    names = [item.audio.stem for item in fsdd_set(fsdd_folder)]
    expected = [f"{digit}_{speaker}_{take}" for speaker in ("george", "lucas")
                for take in (0, 1, 10) for digit in (0, 3, 9)]
    assert names == expected
    george = [n for n in names if "george" in n]
    assert {n.split("_")[0] for n in george[:3]} == {"0", "3", "9"}  # first take: every digit


def test_fsdd_set_reads_its_folder_from_the_environment(fsdd_folder, monkeypatch):
    monkeypatch.setenv("SPEECHQ_FSDD", str(fsdd_folder))
    assert fsdd_set() == fsdd_set(fsdd_folder)


def test_fsdd_set_names_a_missing_or_empty_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*SPEECHQ_FSDD"):
        fsdd_set(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        fsdd_set(empty)


@pytest.fixture
def testdata_folder(tmp_path):
    """pocketsphinx-testdata's layout: cards/ with its transcription, and two headerless clips."""
    root = tmp_path / "data"
    (root / "cards").mkdir(parents=True)
    (root / "cards" / "cards.transcription").write_text(
        "<s> ten of clubs  </s> (001)\n"
        "\n"
        "<s> five five  </s> (004)\n")
    for name in ("001", "004"):
        save_wav(root / "cards" / f"{name}.wav", _tone(0.3, 16_000), 16_000)
    pcm = (_tone(0.5, POCKETSPHINX_RAW_RATE) * 32767).round().to(torch.int16)
    (root / "goforward.raw").write_bytes(pcm.numpy().tobytes())
    (root / "tidigits").mkdir()
    (root / "tidigits" / "dhd.2934z.raw").write_bytes(pcm[:4000].numpy().tobytes())
    return root, pcm


def test_pocketsphinx_clips_reads_cards_and_converts_raw_clips(testdata_folder, tmp_path):
    root, pcm = testdata_folder
    out = tmp_path / "eval"
    items = pocketsphinx_clips(root, out)
    assert [(i.text, i.voice) for i in items] == [
        ("ten of clubs", "cards"), ("five five", "cards"),
        ("go forward ten meters", "goforward"), ("two nine three four zero", "tidigits")]
    assert items[0].audio == root / "cards" / "001.wav"
    assert items[2].audio == out / "pocketsphinx" / "goforward.wav"
    wav, rate = sf.read(items[2].audio, dtype="int16")
    assert rate == POCKETSPHINX_RAW_RATE
    assert torch.equal(torch.from_numpy(wav), pcm)  # the same samples, only a header added
    assert sf.info(items[3].audio).frames == 4000


def test_pocketsphinx_clips_skips_what_is_absent(tmp_path):
    assert pocketsphinx_clips(tmp_path / "none", tmp_path / "eval") == []
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "goforward.raw").write_bytes(b"\0\0" * 1600)
    assert [i.voice for i in pocketsphinx_clips(tmp_path / "only", tmp_path / "eval")] == ["goforward"]


@pytest.mark.skipif(not (POCKETSPHINX_DATA / "cards" / "cards.transcription").is_file(),
                    reason="apt-get install pocketsphinx-testdata")
def test_the_installed_clips(tmp_path):
    items = pocketsphinx_clips(out_dir=tmp_path)
    groups = [i.voice for i in items]
    assert groups.count("cards") == 5 and "goforward" in groups
    assert all(i.audio.is_file() for i in items)
    assert sf.info(items[groups.index("goforward")].audio).duration == pytest.approx(2.786, abs=0.01)
    assert len(librivox_set()) == 5
