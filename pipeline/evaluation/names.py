"""A rare-name evaluation set: sentences about people whose names no model has seen.

    names = name_sentences("test")       # 120 NameSentence: text, the names in it
    items = speak_names(names)           # each spoken by one held-out voice (EvalItem)
    name_recognition([s.names for s in names], hypotheses)   # share of names heard whole

Contextual biasing (hotwords) is for the words a recogniser cannot know: names. The names here
are invented, syllable by syllable from a seeded generator, and kept only where neither the
training text (`data/text/train.txt`, where it is) nor the shipped word list
(`checkpoints/lexicon.txt`) has any of their words, so every one is new to the model, its
language models and its lexicon. Each sentence is a template with one full name ("first last")
or a surname after a title, spoken by one of the held-out voices in turn (Festival's
`cmu_us_slt_arctic_hts` and `kal_diphone`, espeak-ng's `en-gb-x-gbclan`, as the Harvard sets;
pipeline.evaluation.evalsets). The splits hold disjoint names: `dev` to choose weights on,
`test` to report, `distractors` (names in no sentence) to bias with when the audio holds none.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.checkpoints import REPO_ROOT, default_checkpoint
from pipeline.evaluation.evalsets import EVAL_DIR, HELD_OUT_VOICES, EvalItem, speak_set
from pipeline.frontend.text import words_for_scoring

TRAIN_TEXT = REPO_ROOT / "data" / "text" / "train.txt"
SPLITS = {"dev": 60, "test": 120, "distractors": 100}  # names (sentences) per split
_SEED = 20261130

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr",
           "kr", "tr", "st", "sh", "th", "ch", "bl", "fl", "pl")
_VOWELS = ("a", "e", "i", "o", "u", "a", "o", "ai", "ee", "oo")
_CODAS = ("", "n", "r", "l", "s", "k", "m", "th", "nd")
_SURNAME_ENDS = ("", "", "", "son", "ley", "wick", "dale", "ford", "ton", "by", "mar", "ski")

_TEMPLATES = (
    "{full} arrived at the station before noon.",
    "We asked {full} to read the letter aloud.",
    "The prize this year goes to {full}.",
    "Call {full} when the train leaves.",
    "{full} planted roses along the garden wall.",
    "My neighbour {full} keeps three old dogs.",
    "The report was written by {full} last spring.",
    "Please give this parcel to {full} tomorrow.",
    "{full} won the race by a narrow margin.",
    "I met {full} at the market on Sunday.",
    "Doctor {last} will see you in the morning.",
    "The meeting with Mister {last} ran late.",
    "Ask Miss {last} where the keys are kept.",
    "Professor {last} spoke about the tides.",
    "The shop on the corner belongs to {full}.",
    "Everyone cheered when {full} walked in.",
    "{full} painted the boat a bright blue.",
    "A letter from {full} came in the post.",
    "Captain {last} steered the ship through the storm.",
    "They named the new bridge after {full}.",
)


@dataclass(frozen=True)
class NameSentence:
    text: str
    names: tuple[str, ...]  # the names in it, as spoken: "first last", or a surname


def known_words(paths: Sequence[Path] | None = None) -> set[str]:
    """The words of the training text (where it is) and of the shipped word list: what an
    invented name must not be."""
    from pipeline.data.lexicon import read_lexicon

    words: set[str] = set()
    if paths is None:
        lexicon = default_checkpoint("lexicon")
        if lexicon.is_file():
            words |= set(read_lexicon(lexicon).words)
        paths = [TRAIN_TEXT] if TRAIN_TEXT.is_file() else []
    for path in paths:
        words |= set(words_for_scoring(Path(path).read_text()).split())
    return words


def invented_names(n: int, known: set[str], rng: random.Random) -> list[tuple[str, str]]:
    """`n` (first, last) pairs of invented words, none in `known` and no word used twice."""
    used: set[str] = set()

    def word(syllables: int, ends: Sequence[str]) -> str:
        while True:
            # open syllables, a coda only at the end: names a voice can say and a listener
            # could spell
            w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
            w += rng.choice(_CODAS) + rng.choice(ends)
            new = w not in known and w not in used
            if new and 4 <= len(w) <= 12 and not re.search(r"(.)\1\1", w):  # no "ooo"
                used.add(w)
                return w

    return [(word(rng.choice((2, 3)), ("",)), word(2, _SURNAME_ENDS)) for _ in range(n)]


def name_sentences(split: str, known: set[str] | None = None) -> list[NameSentence]:
    """The sentences of one split (`SPLITS`), one name each; the same on every call."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    known = known_words() if known is None else known
    rng = random.Random(_SEED)
    names = invented_names(sum(SPLITS.values()), known, rng)
    order = list(SPLITS)
    start = sum(SPLITS[name] for name in order[: order.index(split)])
    out = []
    for i, (first, last) in enumerate(names[start: start + SPLITS[split]]):
        template = _TEMPLATES[(i + start) % len(_TEMPLATES)]
        full = f"{first.capitalize()} {last.capitalize()}"
        spoken = full if "{full}" in template else last.capitalize()
        out.append(NameSentence(template.format(full=full, last=last.capitalize()), (spoken,)))
    return out


def speak_names(sentences: list[NameSentence], voices: Sequence[str] = HELD_OUT_VOICES,
                out_dir: Path = EVAL_DIR) -> list[EvalItem]:
    """Sentence i spoken by voice i mod len(voices), cached as the Harvard sets are."""
    items: list[EvalItem | None] = [None] * len(sentences)
    for v, voice in enumerate(voices):
        chosen = list(range(v, len(sentences), len(voices)))
        for i, item in zip(chosen, speak_set([sentences[i].text for i in chosen], voice, out_dir)):
            items[i] = item
    return items  # type: ignore[return-value]


def hotwords_of(sentences: list[NameSentence]) -> tuple[str, ...]:
    """Every name of the sentences, once each: a contact list for the whole set."""
    return tuple(dict.fromkeys(n for s in sentences for n in s.names))


def name_recognition(names: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> float:
    """The share of names whose words all appear in their sentence's hypothesis."""
    heard = total = 0
    for sentence_names, hyp in zip(names, hypotheses, strict=True):
        words = set(words_for_scoring(hyp).split())
        for name in sentence_names:
            total += 1
            heard += all(w in words for w in words_for_scoring(name).split())
    return heard / total if total else 0.0
