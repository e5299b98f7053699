"""The recogniser's word list: building it, the shipped file, and the Recognizer's use of it."""

import json

import pytest
import torch
from click.testing import CliRunner

from pipeline.checkpoints import default_checkpoint
from pipeline.cli.train import lexicon_cmd
from pipeline.data.lexicon import (
    LexiconError,
    build_lexicon,
    cmudict_path,
    dictionary_words,
    read_lexicon,
    write_lexicon,
)
from pipeline.inference.recognizer import Recognizer
from tests.helpers import make_tiny_asr_checkpoint

DICTIONARY = "READ R EH D\nread(2) R IY D\nDON'T D OW N T\nA. EY\nrock-n-roll R AA K\n\n"


def test_build_normalises_text_and_dictionary_words(tmp_path):
    (tmp_path / "dict").write_text(DICTIONARY)
    words = build_lexicon(["The cat sat on 2 mats.", "It's Tom's hat!", "the hat"], [tmp_path / "dict"])
    assert words == {"the": 2, "cat": 1, "sat": 1, "on": 1, "two": 1, "mats": 1, "it's": 1, "tom's": 1,
                     "hat": 2, "read": 0, "don't": 0, "a": 0, "rock": 0, "n": 0, "roll": 0}


def test_write_and_read_round_trip(tmp_path):
    assert write_lexicon(tmp_path / "lex.txt", ["dog", "cat", "dog"], {"made": "today"}) == 2
    assert (tmp_path / "lex.txt").read_text() == "# made: today\ncat\ndog\n"
    lexicon = read_lexicon(tmp_path / "lex.txt")
    assert "cat" in lexicon and "ca" not in lexicon and "ca" in lexicon.prefixes
    assert not lexicon.rare  # a plain word list: no word is rare
    assert write_lexicon(tmp_path / "counted.txt", {"dog": 3, "cat": 0}) == 2
    assert (tmp_path / "counted.txt").read_text() == "cat 0\ndog 3\n"
    counted = read_lexicon(tmp_path / "counted.txt")
    assert counted.words == {"cat", "dog"} and counted.rare == {"cat"}


def test_a_malformed_line_is_a_clear_error(tmp_path):
    (tmp_path / "bad.txt").write_text("cat 1\ndog many\n")
    with pytest.raises(LexiconError, match="bad.txt:2: expected a word and an optional count"):
        read_lexicon(tmp_path / "bad.txt")


def test_missing_or_empty_lexicon_is_a_clear_error(tmp_path):
    with pytest.raises(LexiconError, match="no such lexicon"):
        read_lexicon(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(LexiconError, match="empty"):
        read_lexicon(tmp_path / "empty.txt")


def test_cli_writes_text_and_dictionary_words(tmp_path):
    (tmp_path / "text.txt").write_text("A dog barked.\nThe dog slept.\n")
    (tmp_path / "dict").write_text(DICTIONARY)
    out = tmp_path / "lex.txt"
    result = CliRunner().invoke(lexicon_cmd, ["--text", str(tmp_path / "text.txt"), "--dictionary",
                                              str(tmp_path / "dict"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["words"] == len(read_lexicon(out)) == 10
    result = CliRunner().invoke(lexicon_cmd, ["--text", str(tmp_path / "text.txt"), "--no-cmudict",
                                              "--out", str(out)])
    header, words = _header_and_words(out)
    assert words == ["a 1", "barked 1", "dog 2", "slept 1", "the 1"]
    assert header[0] == f"# command: speechq lexicon --text {tmp_path / 'text.txt'} --no-cmudict --out {out}"
    assert header[1] == f"# sources: {tmp_path / 'text.txt'}"


def _header_and_words(path):
    lines = path.read_text().splitlines()
    return [x for x in lines if x.startswith("#")], [x for x in lines if not x.startswith("#")]


def test_shipped_lexicon_holds_cmudict():
    """checkpoints/lexicon.txt is CMUdict (as pocketsphinx carries it) plus the training text."""
    shipped = read_lexicon(default_checkpoint("lexicon"))
    cmudict = dictionary_words(cmudict_path())
    assert len(cmudict) > 100_000 and cmudict <= shipped.words
    assert "the" not in shipped.rare and "aaberg" in shipped.rare  # CMUdict's name, not in the text


@pytest.fixture(scope="module")
def asr_path(tmp_path_factory):
    return make_tiny_asr_checkpoint(tmp_path_factory.mktemp("asr") / "asr.pt")


def test_recognizer_loads_a_lexicon_and_weight_zero_is_none(asr_path, tmp_path):
    write_lexicon(tmp_path / "lex.txt", ["cat", "dog"])
    wav = torch.randn(16_000) * 0.1
    plain = Recognizer.load(asr_path, lexicon=False)
    assert plain.lexicon is None and plain.checkpoint_info["lexicon"] is None
    fused = Recognizer.load(asr_path, lexicon=tmp_path / "lex.txt")
    assert fused.checkpoint_info["lexicon"].endswith("lex.txt") and len(fused.lexicon) == 2
    assert fused.transcribe(wav, lexicon_weight=0.0).text == plain.transcribe(wav).text
    assert isinstance(fused.transcribe(wav, lexicon_weight=2.0).text, str)
    (tmp_path / "rare.txt").write_text((tmp_path / "lex.txt").read_text().replace("\n", " 0\n"))
    rare = Recognizer.load(asr_path, lexicon=tmp_path / "rare.txt")  # every word rare
    assert rare.lexicon.rare == rare.lexicon.words
    assert rare.transcribe(wav, rare_word_weight=0.0).text == fused.transcribe(wav).text
    assert Recognizer.load(asr_path).checkpoint_info["lexicon"] == str(default_checkpoint("lexicon"))
    with pytest.raises(LexiconError):
        Recognizer.load(asr_path, lexicon=tmp_path / "none.txt")
