"""A word list as a beam-search scorer: soft lexicon constraint on subword hypotheses.

A recogniser that spells with subword units makes near-miss spellings on voices it never
heard ("kitans" for kittens, "responts" for responds) that no dictionary holds. The scorer
follows the word each hypothesis is spelling and gives -1 to the first piece that makes it a
non-prefix of every lexicon word, or ends it before it is a whole word; with a weight, the
search prefers real words without forbidding new ones (names), and a word pays at most once.
Kaldi and flashlight's lexicon decoders constrain hard, to the lexicon only; ESPnet has no
lexicon scorer for subword models.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from models.decoding import Scorer

WORD_START = "\u2581"  # sentencepiece's mark on a piece that begins a word


class Lexicon:
    """A set of words and of all their prefixes ("" included)."""

    def __init__(self, words: Iterable[str]):
        self.words = frozenset(w for w in words if w)
        self.prefixes = frozenset(w[:i] for w in self.words for i in range(len(w) + 1))

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.words


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
    """

    def __init__(self, lexicon: Lexicon, pieces: Sequence[str | None], eos: int,
                 max_cached: int = 50_000):
        self.lexicon, self.pieces, self.eos = lexicon, list(pieces), eos
        self.max_cached = max_cached
        self._starts = [p is not None and p.startswith(WORD_START) for p in self.pieces]
        # the cost of starting a word with each piece, whatever came before: also the whole row
        # after a word that has left the lexicon (and paid)
        self._start_cost = [-float(starts and piece[1:] not in lexicon.prefixes)
                            for piece, starts in zip(self.pieces, self._starts)]
        self._rows: dict[str | None, Tensor] = {}

    def init_state(self, beam_size):
        return None  # the batch size is known at the first `score`

    def score(self, tokens, state):
        if state is None:
            state = [""] * tokens.size(0)
        rows = torch.stack([self._row(word) for word in state])  # (N, V)
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
