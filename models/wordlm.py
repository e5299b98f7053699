"""A word n-gram language model as a beam-search scorer, fused at word boundaries.

The subword LM (models.lm) learns from the training text alone, a few tens of thousands of
sentences; the homophones a recogniser confuses on a new voice ("the wind blue", "fairy
tails", "thumb tax") are told apart by word context that a large general-English n-gram
model has. Subword hypotheses meet words only when a word ends, so the scorer charges
`log P(word | previous words)` to the token that ends it: a piece that begins the next word,
or EOS, which also pays `log P(</s> | ...)`. This is the word-level half of Hori et al.'s
multi-level LM (2018, "End-to-end speech recognition with word-based RNN language models")
with the subword LM kept for the scores inside a word. A word whose score waits for its end
would let a hypothesis that keeps spelling one long word look better than those that end
theirs, until the beam holds nothing else (on real speech the search glued a sentence into one
word). So a word pays `letter_logprob` per letter as it is spelled, and the token that ends it
settles the difference to its true log-probability: a lookahead, the total unchanged.
`word_bonus`, added to every ended word, is the word insertion bonus of HMM decoders.

The n-gram model itself is behind `WordLM`, a protocol with one method (`logprob`): `models/`
does no I/O, and the pipeline adapts a model file to it (pipeline.inference.wordlm).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol

import torch

from models.decoding import Scorer
from models.lexicon import WORD_START

SENTENCE_START, SENTENCE_END = "<s>", "</s>"


class WordLM(Protocol):
    order: int  # n: a word's probability depends on the n - 1 words before it

    def logprob(self, word: str, history: tuple[str, ...]) -> float:
        """Natural-log P(word | history), `history` oldest first and starting with
        SENTENCE_START until n - 1 words have been seen; `word` may be SENTENCE_END."""
        ...


class WordLMScorer(Scorer):
    """`WordLM` log-probabilities on the tokens that end each hypothesis's words.

    The state is, per hypothesis, (the last n - 1 finished words, the word spelled so far).
    Scores are cached per (history, word), since the hypotheses of a beam share most words.

    Args:
        pieces: each token id's text, a piece that begins a word starting with WORD_START;
            None for ids that spell nothing (blank, SOS/EOS, unknown).
        eos: the end-of-sentence id, which ends the last word and the sentence.
        word_bonus: added to each ended word's log-probability (`with_word_bonus` gives a
            copy with another, sharing the cache).
        letter_logprob: what each letter of a word being spelled pays until the word ends.
    """

    def __init__(self, lm: WordLM, pieces: Sequence[str | None], eos: int, word_bonus: float = 0.0,
                 letter_logprob: float = -0.5, max_cached: int = 200_000):
        self.lm, self.pieces, self.eos, self.max_cached = lm, list(pieces), eos, max_cached
        self.word_bonus, self.letter_logprob = word_bonus, letter_logprob
        self._starts = [p is not None and p.startswith(WORD_START) for p in self.pieces]
        ends = torch.tensor(self._starts, dtype=torch.float)
        ends[eos] = 1.0
        self._word_ends = ends  # (V,) 1 where the next token ends the word spelled so far
        # (V,) letters each token adds to the word being spelled
        self._letters = torch.tensor([0.0 if p is None else len(p) - int(start)
                                      for p, start in zip(self.pieces, self._starts)])
        self._start = (SENTENCE_START,)[-(lm.order - 1):] if lm.order > 1 else ()
        self._cache: dict[tuple[tuple[str, ...], str], float] = {}

    def with_word_bonus(self, word_bonus: float) -> "WordLMScorer":
        scorer = copy.copy(self)  # the model, pieces and cache are shared, never copied
        scorer.word_bonus = word_bonus
        return scorer

    def init_state(self, beam_size):
        return None  # the batch size is known at the first `score`

    def score(self, tokens, state):
        if state is None:
            state = [(self._start, "")] * tokens.size(0)
        # the word's score, less what its letters paid already, on the tokens that end it
        settle = torch.tensor([self._logprob(h, w) + self.word_bonus - self.letter_logprob * len(w)
                               if w else 0.0 for h, w in state])
        sentence_end = torch.tensor([self._logprob(self._push(h, w), SENTENCE_END) for h, w in state])
        rows = settle[:, None] * self._word_ends + self.letter_logprob * self._letters  # (N, V)
        rows[:, self.eos] = settle + sentence_end  # EOS ends the sentence too
        return rows.to(tokens.device), state

    def select(self, state, hyp, token):
        return [self._extend(*state[h], t) for h, t in zip(hyp.tolist(), token.tolist())]

    def _extend(self, history: tuple[str, ...], word: str, token: int) -> tuple[tuple[str, ...], str]:
        piece = self.pieces[token]
        if piece is None:
            return history, word
        if self._starts[token]:
            return self._push(history, word), piece[len(WORD_START):]
        return history, word + piece

    def _push(self, history: tuple[str, ...], word: str) -> tuple[str, ...]:
        if not word:
            return history
        return (history + (word,))[-(self.lm.order - 1):] if self.lm.order > 1 else ()

    def _logprob(self, history: tuple[str, ...], word: str) -> float:
        key = (history, word)
        value = self._cache.get(key)
        if value is None:
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            value = self._cache[key] = self.lm.logprob(word, history)
        return value
