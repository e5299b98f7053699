"""English normalisation, vocabularies, text limits and the phone front-ends."""

from __future__ import annotations

import logging
import shutil

import pytest

from pipeline.frontend.text import (
    MAX_TEXT_CHARS,
    CharVocab,
    EmptyTextError,
    PhoneVocab,
    TextError,
    TextTooLongError,
    check_text,
    espeak_phonemes,
    flite_phones,
    normalize_text,
    split_sentences,
    words_for_scoring,
)


@pytest.mark.parametrize("written, spoken", [
    # numbers, with and without thousands separators, and decimals
    ("I have 3 cats", "i have three cats"),
    ("1,234,567 people", "one million two hundred and thirty four thousand five hundred and "
                         "sixty seven people"),
    ("pi is 3.14", "pi is three point one four"),
    # ordinals
    ("the 21st of May", "the twenty first of may"),
    ("his 2nd and 3rd tries", "his second and third tries"),
    # years
    ("born in 1999", "born in nineteen ninety nine"),
    ("since 2005", "since two thousand and five"),
    # currency
    ("it cost $5.50", "it cost five dollars fifty cents"),
    ("$1 and £3", "one dollar and three pounds"),
    ("€1.01", "one euro one cent"),
    ("a $2.5 million deal", "a two point five million dollars deal"),
    # times
    ("at 3:30 pm", "at three thirty p m"),
    ("at 10:00", "at ten o'clock"),
    ("at 9:05 a.m.", "at nine oh five a m"),
    # percentages
    ("50% off", "fifty percent off"),
    # abbreviations
    ("Dr. Smith met Mr. and Mrs. Jones", "doctor smith met mister and missus jones"),
    ("St. Louis, on Main St.", "saint louis, on main street"),
    ("No. 5", "number five"),
    ("she said no.", "she said no."),  # "no." is only "number" before a digit
    ("cats, dogs, etc.", "cats, dogs, et cetera"),
    # case, punctuation, accents, quotes
    ("Well-known; really: yes!", "well known, really, yes!"),
    ("Café naïve", "cafe naive"),
    ("it\u2019s \u201cfine\u201d (really)", "it's fine really"),
    ("salt & pepper", "salt and pepper"),
    # decades, and digits glued to letters
    ("in the 1990s", "in the nineteen nineties"),
    ("a widow in her 70s", "a widow in her seventies"),
    ("20inches by 36 inches", "twenty inches by thirty six inches"),
    ("The QE2 sails", "the qe two sails"),
])
def test_normalize_text(written, spoken):
    assert normalize_text(written) == spoken


def test_normalised_text_only_uses_the_character_vocabulary():
    text = normalize_text("On 4th July 1776, Dr. Franklin paid $12.05 at 10:15 pm; 99% agreed!")
    assert set(text) <= set(CharVocab().chars)


def test_unknown_characters_are_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.frontend.text"):
        out = normalize_text("I \u2665 \u5317\u4eac \U0001F642 tea")
    assert out == "i tea"
    assert "dropped" in caplog.text and "\u2665" in caplog.text


def test_plain_text_gives_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.frontend.text"):
        normalize_text("The birch canoe slid on the smooth planks.")
    assert not caplog.records


def test_words_for_scoring_drops_punctuation_and_quotes():
    assert words_for_scoring("'Hello,' she said, 'it's Dr. No.'") == "hello she said it's doctor no"
    assert words_for_scoring("Glue the sheet.") == words_for_scoring("glue the SHEET")
    assert words_for_scoring("") == ""


def test_check_text_limits():
    assert check_text("  hello  ") == "hello"
    with pytest.raises(EmptyTextError, match="empty"):
        check_text("   \n ")
    with pytest.raises(TextTooLongError, match=str(MAX_TEXT_CHARS)):
        check_text("a" * (MAX_TEXT_CHARS + 1))
    with pytest.raises(TextTooLongError):
        check_text("hello world", max_chars=5)
    with pytest.raises(TextError, match="string"):
        check_text(42)  # type: ignore[arg-type]


def test_char_vocab_round_trip_and_unknowns(caplog):
    vocab = CharVocab()
    text = "hello, world? it's fine!"
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert min(ids) >= 3 and max(ids) < len(vocab)
    with caplog.at_level(logging.WARNING, logger="pipeline.frontend.text"):
        assert vocab.decode(vocab.encode("caf\u00e9 #1")) == "caf "
    assert "dropped" in caplog.text


def test_split_sentences_respects_the_limit():
    text = "One short sentence. " + ", ".join(["a clause of words"] * 20) + ". The end!"
    chunks = split_sentences(text, max_chars=80)
    assert all(len(c) <= 80 for c in chunks)
    assert " ".join(chunks).split() == text.split()


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")
def test_flite_phones_are_in_the_phone_vocabulary():
    phones = flite_phones("the birch canoe")
    assert phones[0] == phones[-1] == "pau"
    assert "b" in phones and "k" in phones
    ids = PhoneVocab().encode(phones)
    assert len(ids) == len(phones) and min(ids) >= 1


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_phonemes():
    ipa = espeak_phonemes("hello world")
    assert len(ipa.split()) == 2 and "w" in ipa
