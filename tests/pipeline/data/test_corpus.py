"""The training text and the synthetic corpus: `speechq text-corpus` and `speechq corpus`."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from pipeline.data.corpus import (
    WORDNET_DIR,
    CorpusError,
    Prosody,
    Voice,
    assign_voices,
    cover_vocabulary,
    normalize_for_match,
    parse_psdur,
    read_harvard,
    short_utterances,
    speak,
    utterance_id,
    utterance_prosody,
)
from pipeline.data.manifests import read_manifest
from workers.cli import main as speechq

needs_wordnet = pytest.mark.skipif(not list(WORDNET_DIR.glob("data.*")),
                                   reason="WordNet is not installed (apt-get install wordnet-base)")
needs_voices = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("espeak-ng") is None,
    reason="flite and espeak-ng are needed (apt-get install flite espeak-ng)")
needs_pico = pytest.mark.skipif(shutil.which("pico2wave") is None,
                                reason="SVOX Pico is needed (make corpus-voices)")

CORPUS_VOICES = "slt,kal16,en-us,en-gb+f2"  # 2 flite + 2 espeak-ng
CORPUS_LINES = 50


@pytest.fixture(scope="module")
def training_text(tmp_path_factory) -> tuple[Path, dict]:
    """`speechq text-corpus` run once for the module: the file and the stats it printed."""
    out = tmp_path_factory.mktemp("text") / "train.txt"
    result = CliRunner().invoke(speechq, ["text-corpus", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.output.strip().splitlines()[-1])


# ---------------------------------------------------------------- voices and phones


def test_voice_parse():
    assert Voice.parse("slt") == Voice("flite", "slt")
    assert Voice.parse("flite:kal16") == Voice("flite", "kal16")
    assert Voice.parse("en-us+m3") == Voice("espeak-ng", "en-us+m3")
    assert Voice.parse("espeak-ng:en-gb-x-rp+f3").slug == "espeak-ng-en-gb-x-rp-f3"
    assert Voice.parse("mb-us1") == Voice("espeak-ng", "mb-us1")  # espeak-ng with MBROLA's diphones
    assert Voice.parse("pico:en-gb") == Voice("pico", "en-GB")  # as pico2wave spells it
    assert Voice.parse("pico:en-US").slug == "pico-en-us"
    for held_out in ("festival:cmu_us_slt_arctic_hts", "festival:kal_diphone", "en-gb-x-gbclan",
                     "espeak-ng:en-gb-x-gbclan+m3"):
        with pytest.raises(CorpusError, match="held out"):
            Voice.parse(held_out)
    for unknown in ("flite:nobody", "fr-fr", "sapi:david", "mb-fr1", "mb-us1+f2", "pico:de-DE",
                    "pico:slt"):
        with pytest.raises(CorpusError):
            Voice.parse(unknown)


def test_parse_psdur():
    assert parse_psdur("pau:0.184 dh:0.236 ax:0.3\n") == [
        ("pau", 0.184), ("dh", 0.236), ("ax", 0.3)]
    assert parse_psdur("") == []


def test_assign_voices():
    voices = [Voice("flite", "slt"), Voice("espeak-ng", "en-us")]
    assert len(assign_voices(3, voices, spread=False)) == 6
    assert assign_voices(3, voices, spread=True) == [(0, voices[0]), (1, voices[1]), (2, voices[0])]


def test_ids_are_deterministic():
    voice = Voice("flite", "slt")
    assert utterance_id(voice, "A line.") == utterance_id(Voice.parse("slt"), "A line.")
    assert utterance_id(voice, "A line.") != utterance_id(Voice.parse("awb"), "A line.")


def test_prosody_is_drawn_within_its_spread_and_from_the_id():
    voice = Voice("flite", "slt")
    uids = [utterance_id(voice, f"Line {i}.", 0.25) for i in range(200)]
    assert uids[0] != utterance_id(voice, "Line 0.")  # its own ids beside a plain corpus
    drawn = [utterance_prosody(uid, 0.25) for uid in uids]
    for factor in ("stretch", "pitch"):
        values = [getattr(p, factor) for p in drawn]
        assert all(1 / 1.25 - 1e-3 <= v <= 1.25 + 1e-3 for v in values)
        assert min(values) < 0.9 and max(values) > 1.1  # the range is used, both ways
    assert drawn == [utterance_prosody(uid, 0.25) for uid in uids]
    assert utterance_prosody(uids[0], 0.0) is None
    with pytest.raises(CorpusError, match="spread"):
        Prosody.sample(random.Random(0), 1.5)


def _median_f0(path: Path) -> float:
    import torchaudio.functional as F

    audio, rate = sf.read(str(path), dtype="float32")
    return float(F.detect_pitch_frequency(torch.from_numpy(audio), rate, freq_low=60).median())


def _speech_seconds(path: Path) -> float:
    """The clip's length without its leading and trailing silence (Pico's trailing pause grows
    with the pitch)."""
    import librosa

    audio, rate = sf.read(str(path), dtype="float32")
    _, (start, end) = librosa.effects.trim(audio, top_db=40)
    return (end - start) / rate


@pytest.mark.parametrize("voice", [pytest.param("slt", marks=needs_voices),
                                   pytest.param("en-us", marks=needs_voices),
                                   pytest.param("pico:en-US", marks=needs_pico)])
def test_prosody_moves_tempo_and_pitch(voice, tmp_path):
    voice, text = Voice.parse(voice), "The boy was there when the sun rose."
    plain, slow, high = (tmp_path / f"{n}.wav" for n in ("plain", "slow", "high"))
    speak(voice, text, plain)
    speak(voice, text, slow, Prosody(stretch=1.25))
    speak(voice, text, high, Prosody(pitch=1.25))
    assert _speech_seconds(slow) / _speech_seconds(plain) == pytest.approx(1.25, abs=0.1)
    assert _speech_seconds(high) == pytest.approx(_speech_seconds(plain), rel=0.05)
    assert _median_f0(high) / _median_f0(plain) == pytest.approx(1.25, abs=0.1)


@needs_pico
def test_pico_speaks_16k_and_refuses_markup_in_the_text(tmp_path):
    wav = tmp_path / "pico.wav"
    assert speak(Voice.parse("pico:en-GB"), "-Five, said the man.", wav) == []  # no phones
    info = sf.info(str(wav))
    assert info.samplerate == 16_000 and info.channels == 1 and info.duration > 1.0
    with pytest.raises(CorpusError, match="markup"):
        speak(Voice.parse("pico:en-US"), "<speed level='300'>fast</speed>", tmp_path / "no.wav")


# ---------------------------------------------------------------- training text


@needs_wordnet
def test_text_corpus_size_and_disjoint_from_harvard(training_text):
    path, stats = training_text
    lines = path.read_text().splitlines()
    assert stats["sentences"] == len(lines) >= 20_000
    assert stats["distinct_words"] >= 5_000
    # a handful of WordNet examples differ only in the case of their first letter; the file is
    # kept as it is, because `--spread` corpora assign voices by line number
    assert len(set(lines)) > 0.999 * len(lines)
    harvard = {normalize_for_match(s) for s in read_harvard()}
    assert len(harvard) == 720
    assert not harvard & {normalize_for_match(s) for s in lines}


@needs_wordnet
def test_language_model_text_adds_glosses_and_stays_disjoint(training_text, tmp_path):
    out = tmp_path / "lm.txt"
    result = CliRunner().invoke(speechq, ["text-corpus", "--out", str(out), "--glosses"])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    examples = set(training_text[0].read_text().splitlines())
    assert examples <= set(lines) and len(lines) > 3 * len(examples)  # the examples, and more
    assert not any('"' in line for line in lines)  # glosses come without their quoted examples
    harvard = {normalize_for_match(s) for s in read_harvard()}
    assert not harvard & {normalize_for_match(s) for s in lines}


def test_cover_vocabulary_takes_lines_for_words_the_text_lacks():
    known = ["the cat sat", "the cat ran", "a dog ran"]
    candidates = ["The cat sat",  # already known
                  "the dune rose", "a dune of sand", "sand and a dune", "the dune moved",
                  "see the Brugmansia",  # a word used once in the candidates: a name, not taught
                  "the cat and the dog", "the dog and a cat", "sand on a dog"]
    out = cover_vocabulary(candidates, known, target=2, min_uses=2)
    # dune reaches 2 in two lines, then sand and "and" (both used thrice) in one each; dog was
    # reached with "and"; nothing else is short
    assert out == ["the dune rose", "a dune of sand", "sand and a dune", "the cat and the dog"]
    assert cover_vocabulary(candidates, known, target=2, min_uses=2, limit=1) == ["the dune rose"]
    assert "see the Brugmansia" in cover_vocabulary(candidates, known, target=1, min_uses=1)


@needs_wordnet
def test_cover_text_teaches_rare_words_and_stays_disjoint(training_text, tmp_path):
    out = tmp_path / "cover.txt"
    result = CliRunner().invoke(speechq, ["text-corpus", "--out", str(out), "--cover", str(training_text[0]),
                                          "--limit", "2000"])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 2000
    assert not set(lines) & set(training_text[0].read_text().splitlines())
    harvard = {normalize_for_match(s) for s in read_harvard()}
    assert not harvard & {normalize_for_match(s) for s in lines}


DIGITS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


def test_short_utterances_are_words_pairs_numbers_and_digit_strings_of_the_text():
    text = ["The cat sat on the mat", "The cat ran to the mat", "A dog sat on the cat",
            "The dog ran"] * 3 + ["A zebra grazed"]
    out = short_utterances(text, 400, seed=1)
    assert len(out) == 400 and out == short_utterances(text, 400, seed=1)
    assert all(1 <= len(line.split()) <= 7 and line[0].isupper() for line in out)
    keys = [normalize_for_match(line).split() for line in out]
    vocab = {w for line in text for w in normalize_for_match(line).split()}
    neighbours = {tuple(ws[i: i + 2]) for line in text
                  for ws in [normalize_for_match(line).split()] for i in range(len(ws) - 1)}
    words = [k for k in keys if len(k) == 1 and k[0] in vocab]
    pairs = [k for k in keys if len(k) == 2 and tuple(k) in neighbours]
    digit_strings = [k for k in keys if len(k) >= 2 and set(k) <= DIGITS]
    assert all(k in words or k in pairs or not set(k) & vocab for k in keys)  # nothing else
    for kind in (words, pairs, digit_strings):  # each about a quarter
        assert 60 < len(kind) < 140, len(kind)
    # a word alone is one the text uses three times or more
    assert {w for k in words for w in k} == vocab - {"zebra", "grazed"}


def test_short_utterances_need_words_the_text_repeats():
    with pytest.raises(CorpusError, match="three times"):
        short_utterances(["Unique words only here"], 10)


@needs_wordnet
def test_text_corpus_writes_short_utterances(tmp_path):
    out = tmp_path / "short.txt"
    result = CliRunner().invoke(speechq, ["text-corpus", "--out", str(out), "--short", "300"])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 300 and max(len(line.split()) for line in lines) <= 7


# ---------------------------------------------------------------- speech corpus


def _wav_state(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("wavs/*/*")}


@needs_wordnet
@needs_voices
def test_corpus_builds_200_utterances_from_4_voices_and_resumes(training_text, tmp_path):
    text_path, _ = training_text
    # short lines keep the test quick; any 50 lines of the training text would do
    short = [s for s in text_path.read_text().splitlines() if len(s.split()) <= 6][:CORPUS_LINES]
    lines_file = tmp_path / "lines.txt"
    lines_file.write_text("\n".join(short + short[:3]) + "\n")  # repeats are spoken once
    out = tmp_path / "corpus"
    # run torch's thread pool first, as earlier tests in a session do: a fork-based worker pool
    # then deadlocked in its first torch call
    (torch.ones(256, 256) @ torch.ones(256, 256)).sum()
    args = ["corpus", "--text", str(lines_file), "--voices", CORPUS_VOICES, "--out", str(out)]

    first = CliRunner().invoke(speechq, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.output.strip().splitlines()[-1])
    assert report["written"] == 200
    manifest = Path(report["manifest"])
    utterances = read_manifest(manifest)
    assert len(utterances) == 200 == len({u.id for u in utterances})
    assert sorted({u.speaker for u in utterances}) == [
        "espeak-ng-en-gb-f2", "espeak-ng-en-us", "flite-kal16", "flite-slt"]
    assert {u.text for u in utterances} == set(short)
    for u in utterances:
        info = sf.info(str(out / u.audio))
        assert (info.samplerate, info.channels) == (16_000, 1)
        assert u.duration == pytest.approx(info.duration, abs=1e-3) and u.duration > 0.3
        if u.speaker.startswith("flite"):
            # flite's own segmentation: phones in order, speech inside the audio; the final
            # pause may run past the audio's end (kal16 cuts it ~0.1 s short)
            ends = [t for _, t in u.phones]
            assert u.phones[0][0] == u.phones[-1][0] == "pau" and ends == sorted(ends)
            assert ends[-2] < u.duration and ends[-1] == pytest.approx(u.duration, abs=0.15)
        else:
            assert u.phones is None

    # a second run writes nothing: no new wav, the manifest untouched
    manifest_bytes, manifest_mtime = manifest.read_bytes(), manifest.stat().st_mtime_ns
    wavs_before = _wav_state(out)
    second = CliRunner().invoke(speechq, args)
    assert second.exit_code == 0, second.output
    assert json.loads(second.output.strip().splitlines()[-1])["written"] == 0
    assert manifest.read_bytes() == manifest_bytes
    assert manifest.stat().st_mtime_ns == manifest_mtime
    assert _wav_state(out) == wavs_before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    # resumable: only what is missing is spoken again
    lost = out / utterances[0].audio
    lost.unlink()
    third = CliRunner().invoke(speechq, args)
    assert json.loads(third.output.strip().splitlines()[-1])["written"] == 1
    assert manifest.read_bytes() == manifest_bytes


def test_corpus_command_refuses_festival_voices(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("A line.\n")
    result = CliRunner().invoke(speechq, ["corpus", "--text", str(lines), "--voices",
                                          "festival:kal_diphone", "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and "held out" in result.output
    assert not (tmp_path / "c").exists()


def test_corpus_command_refuses_a_prosody_spread_out_of_range(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("A line.\n")
    result = CliRunner().invoke(speechq, ["corpus", "--text", str(lines), "--voices", "slt",
                                          "--prosody", "1.5", "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and "prosody spread" in result.output
