"""The rare-name set: invented names, the same on every call, new to the model, splits apart."""

import random

import pytest

from pipeline.evaluation.names import (
    SPLITS,
    hotwords_of,
    invented_names,
    name_recognition,
    name_sentences,
)
from pipeline.frontend.text import words_for_scoring

KNOWN = {"the", "station", "brathond"}  # a stand-in for the training text and the word list


def _words(sentences) -> set[str]:
    return {w for s in sentences for name in s.names for w in words_for_scoring(name).split()}


def test_each_split_is_the_same_every_time_and_the_splits_share_no_name():
    splits = {name: name_sentences(name, KNOWN) for name in SPLITS}
    assert {name: len(s) for name, s in splits.items()} == SPLITS
    assert name_sentences("test", KNOWN) == splits["test"]
    words = [_words(s) for s in splits.values()]
    assert all(not (a & b) for i, a in enumerate(words) for b in words[i + 1:])
    for sentence in splits["test"]:
        assert all(name in sentence.text for name in sentence.names)
    assert len(hotwords_of(splits["test"])) == SPLITS["test"]
    with pytest.raises(ValueError, match="unknown split"):
        name_sentences("train", KNOWN)


def test_invented_names_avoid_known_words_and_repeat_none():
    known = {f"{o}{v}" for o in "bdfgklmnprstvz" for v in "aeiou"}
    names = invented_names(200, known, random.Random(0))
    words = [w for pair in names for w in pair]
    assert len(set(words)) == len(words) and not set(words) & known
    assert all(w.isalpha() and w.islower() and 4 <= len(w) <= 12 for w in words)


def test_a_name_counts_when_all_its_words_are_heard():
    names = [("Zoran Ketil",), ("Ketil",), ("Ada Brel",)]
    hyps = ["zoran ketil came", "kettle came", "brel and ada"]
    assert name_recognition(names, hyps) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        name_recognition(names, hyps[:2])
