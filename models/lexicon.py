"""A word list as a beam-search scorer: soft lexicon constraint on subword hypotheses.

A recogniser that spells with subword units makes near-miss spellings on voices it never
heard ("kitans" for kittens, "responts" for responds) that no dictionary holds. The scorer
follows the word each hypothesis is spelling and gives -1 to the first piece that makes it a
non-prefix of every lexicon word, or ends it before it is a whole word; with a weight, the
search prefers real words without forbidding new ones (names), and a word pays at most once.
A lexicon may also mark some of its words rare (a pronouncing dictionary's names and odd
spellings that the training text never had): ending one costs `rare_cost`, so an acoustic
near-miss lands on an everyday word before a rare one. Kaldi and flashlight's lexicon decoders
constrain hard, to the lexicon only; ESPnet has no lexicon scorer for subword models.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from models.decoding import Scorer

WORD_START = "\u2581"  # sentencepiece's mark on a piece that begins a word


class Lexicon:
    """A set of words and of all their prefixes ("" included); `rare`: those of the words that
    cost more (LexiconScorer's `rare_cost`)."""

    def __init__(self, words: Iterable[str], rare: Iterable[str] = ()):
        self.words = frozenset(w for w in words if w)
        self.rare = frozenset(rare) & self.words
        self.prefixes = frozenset(w[:i] for w in self.words for i in range(len(w) + 1))

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.words

    def with_words(self, words: Iterable[str]) -> "Lexicon":
        """This lexicon and `words` (a job's hotwords, none of them rare); the large sets are
        shared, not copied."""
        new = frozenset(w for w in words if w) - self.words
        if not new:
            return self
        out = copy.copy(self)
        out.words = _Either(self.words, new)
        out.prefixes = _Either(self.prefixes,
                               frozenset(w[:i] for w in new for i in range(len(w) + 1)))
        return out


class _Either:
    """Two disjoint sets as one, for membership and size."""

    def __init__(self, large: frozenset, small: frozenset):
        self.large, self.small = large, small - large

    def __contains__(self, item) -> bool:
        return item in self.large or item in self.small

    def __len__(self) -> int:
        return len(self.large) + len(self.small)


class LexiconScorer(Scorer):
    """`Lexicon` penalties for the next token of each hypothesis.

    Holds no per-utterance data (the state is the hypotheses' words), so one scorer can serve
    every batch and keep its cache of rows, one per word prefix met, up to `max_cached`. The
    state is a list with, per hypothesis, the word spelled so far, or None once it has left the
    lexicon (and paid).

    Args:
        pieces: each token id's text, a piece that begins a word starting with WORD_START;
            None for ids that spell nothing (blank, SOS/EOS, unknown).
        eos: the end-of-sentence id, which ends the last word.
        rare_cost: what ending a rare word of the lexicon costs, against 1 for leaving it
            (`with_rare_cost` gives a copy with another, sharing the cache).
    """

    def __init__(self, lexicon: Lexicon, pieces: Sequence[str | None], eos: int,
                 rare_cost: float = 0.0, max_cached: int = 50_000):
        self.lexicon, self.pieces, self.eos = lexicon, list(pieces), eos
        self.rare_cost, self.max_cached = rare_cost, max_cached
        self._starts = [p is not None and p.startswith(WORD_START) for p in self.pieces]
        ends = torch.tensor(self._starts, dtype=torch.float)
        ends[eos] = 1.0
        self._word_ends = ends  # (V,) 1 where the next token ends the word spelled so far
        # the cost of starting a word with each piece, whatever came before: also the whole row
        # after a word that has left the lexicon (and paid)
        self._start_cost = [-float(starts and piece[1:] not in lexicon.prefixes)
                            for piece, starts in zip(self.pieces, self._starts)]
        self._rows: dict[str | None, Tensor] = {}

    def with_rare_cost(self, rare_cost: float) -> "LexiconScorer":
        scorer = copy.copy(self)  # the lexicon, pieces and row cache are shared, never copied
        scorer.rare_cost = rare_cost
        return scorer

    def with_words(self, words: Iterable[str]) -> "LexiconScorer":
        """A scorer of this lexicon and `words` (a job's hotwords: a name the job expects is no
        misspelling), with a row cache of its own."""
        lexicon = self.lexicon.with_words(words)
        if lexicon is self.lexicon:
            return self
        return LexiconScorer(lexicon, self.pieces, self.eos, self.rare_cost, self.max_cached)

    def init_state(self, beam_size):
        return None  # the batch size is known at the first `score`

    def score(self, tokens, state):
        if state is None:
            state = [""] * tokens.size(0)
        rows = torch.stack([self._row(word) for word in state])  # (N, V)
        if self.rare_cost and self.lexicon.rare:
            rare = torch.tensor([word in self.lexicon.rare for word in state], dtype=torch.float)
            rows = rows - self.rare_cost * rare[:, None] * self._word_ends
        return rows.to(tokens.device), state

    def select(self, state, hyp, token):
        return [self._extend(state[h], t) for h, t in zip(hyp.tolist(), token.tolist())]

    def _extend(self, word: str | None, token: int) -> str | None:
        piece = self.pieces[token]
        if piece is None:
            return word
        if self._starts[token]:
            word = piece[1:]
        elif word is not None:
            word += piece
        return word if word is not None and word in self.lexicon.prefixes else None

    def _row(self, word: str | None) -> Tensor:
        """(V,) costs of each next token after `word` (cached: hypotheses share prefixes)."""
        row = self._rows.get(word)
        if row is None:
            if word is None:
                row = torch.tensor(self._start_cost)
            else:
                ends_badly = -float(word != "" and word not in self.lexicon)
                prefixes = self.lexicon.prefixes
                row = torch.tensor([
                    0.0 if piece is None else
                    self._start_cost[i] + ends_badly if self._starts[i] else
                    -float(word + piece not in prefixes)
                    for i, piece in enumerate(self.pieces)])
                row[self.eos] = ends_badly
            if len(self._rows) >= self.max_cached:
                self._rows.clear()
            self._rows[word] = row
        return row
