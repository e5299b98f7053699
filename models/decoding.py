"""Token decoding for encoder-decoder models: greedy and batched beam search over weighted scorers.

A `Scorer` scores every vocabulary entry as the next token of every live hypothesis: the
attention decoder, a CTC prefix scorer, a language model, a length bonus. Decoding sums their
log-probabilities with weights (ESPnet's idea), so adding a scorer is one dict entry:

    hyps = decode({"decoder": DecoderScorer(model, memory, mask), "ctc": CTCPrefixScorer(...)},
                  {"decoder": 0.7, "ctc": 0.3}, sos, eos, encoder_lengths,
                  DecodingOptions(beam_size=4))    # per utterance: n_best Hypothesis, best first

A `PartialScorer` (CTC prefix scoring, whose cost grows with every token it scores) sees only
the `pre_beam` tokens the full scorers rank best for each hypothesis (ESPnet's pre-beam); the
rest of the vocabulary is out of the running for that step.

The search itself is a `TokenSearch` (greedy, or beam for beam_size > 1) with `update` (one
step: choose the next tokens from the summed scores) and `finalize` (the finished hypotheses),
and the main loop in `decode` only ties scorers and search together (whisper's layout).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import Tensor


class Stopped(Exception):
    """A decoding abandoned part way because its `should_stop` returned True."""


def stop_if(should_stop: Callable[[], bool] | None) -> None:
    """Raise `Stopped` when `should_stop` says so. The callable may raise an exception of its
    own instead, which ends the call the same way."""
    if should_stop is not None and should_stop():
        raise Stopped


@dataclass(frozen=True)
class DecodingOptions:
    beam_size: int = 1  # 1 = greedy search
    n_best: int = 1  # hypotheses returned per utterance (<= beam_size)
    length_penalty: float = 1.0  # final score = sum logprob / length ** length_penalty; 0 = raw sum
    max_len_ratio: float = 1.0  # max output length = ratio * source length ...
    max_len_offset: int = 10  # ... + this offset
    min_len: int = 0  # EOS is forbidden before this many tokens
    # partial scorers (CTC) score only the best ceil(ratio * beam_size) tokens of the full
    # scorers per hypothesis; 0 = they score the whole vocabulary
    pre_beam_ratio: float = 1.5

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError("beam_size must be >= 1")
        if not 1 <= self.n_best <= self.beam_size:
            raise ValueError("n_best must be between 1 and beam_size")
        if self.length_penalty < 0:
            raise ValueError("length_penalty must be >= 0")
        if self.max_len_ratio <= 0:
            raise ValueError("max_len_ratio must be positive")
        if self.min_len < 0:
            raise ValueError("min_len must be >= 0")
        if self.pre_beam_ratio < 0:
            raise ValueError("pre_beam_ratio must be >= 0")

    @property
    def pre_beam(self) -> int:
        """Tokens per hypothesis a partial scorer scores; 0 = all."""
        return math.ceil(self.pre_beam_ratio * self.beam_size)

    def max_lengths(self, source_lengths: Tensor) -> Tensor:
        """(B,) source lengths -> (B,) maximum output lengths in tokens (EOS included)."""
        return (source_lengths.float() * self.max_len_ratio).long() + self.max_len_offset


@dataclass
class Hypothesis:
    tokens: list[int]  # without SOS and EOS
    score: float  # length-normalised, what hypotheses are sorted by
    logprob: float  # weighted sum of scorer log-probabilities
    hit_max_len: bool = False  # ended by the length cap, not by EOS

    def plus(self, logprob: float, length_penalty: float) -> "Hypothesis":
        """This hypothesis with `logprob` more (a rescorer's weighted score), its score
        length-normalised as the search normalised it (EOS counts where it ended the search)."""
        total = self.logprob + logprob
        length = len(self.tokens) + int(not self.hit_max_len)
        return replace(self, logprob=total, score=normalise(total, length, length_penalty))


def normalise(logprob: float, length: int, length_penalty: float) -> float:
    """A hypothesis's score: its log-probability over its length (EOS included) to the
    `length_penalty`."""
    return logprob / max(length, 1) ** length_penalty


class Scorer(ABC):
    """Scores the next token of every live hypothesis.

    Hypotheses of utterance b sit at rows b * beam ... b * beam + beam - 1.
    """

    @abstractmethod
    def init_state(self, beam_size: int) -> Any:
        """The state for B * beam_size hypotheses that hold only SOS."""

    @abstractmethod
    def score(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """tokens (N, t) prefixes starting with SOS -> (N, V) next-token log-probs, and the
        state to `select` from."""

    @abstractmethod
    def select(self, state: Any, hyp: Tensor, token: Tensor) -> Any:
        """The state of hypotheses `hyp` (N,) extended by `token` (N,), in that order."""


class PartialScorer(Scorer):
    """A scorer that can score a few candidate tokens per hypothesis instead of the whole
    vocabulary; `score` is `score_partial` over every token."""

    @abstractmethod
    def score_partial(self, tokens: Tensor, state: Any, candidates: Tensor | None) -> tuple[Tensor, Any]:
        """tokens (N, t) prefixes, candidates (N, C) token ids (None: the whole vocabulary)
        -> (N, C) (or (N, V)) log-probs of those tokens, and the state to `select` from."""

    def score(self, tokens, state):
        return self.score_partial(tokens, state, None)


class StepModel(Protocol):
    """What `DecoderScorer` needs from an autoregressive decoder."""

    def init_decoder(self, *context: Tensor) -> Any:
        """Decoder state from batch-first context tensors (memory, its mask, ...)."""
        ...

    def decode_step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """tokens (N, 1), the last token of each hypothesis -> (N, V) log-probs, new state
        (with a `reorder(indices)` method)."""
        ...


class DecoderScorer(Scorer):
    """An attention decoder as a scorer: one incremental step per call, cache reordered.

    `context` holds the batch-first tensors the decoder attends to, typically the encoder
    memory and its mask; they are repeated once per beam, unless the model says it attends
    from all of an utterance's hypotheses to one copy (`shares_context_across_beams`).
    """

    def __init__(self, model: StepModel, *context: Tensor):
        self.model, self.context = model, context

    def init_state(self, beam_size):
        if getattr(self.model, "shares_context_across_beams", False):
            return self.model.init_decoder(*self.context)
        return self.model.init_decoder(*(c.repeat_interleave(beam_size, dim=0) for c in self.context))

    def score(self, tokens, state):
        return self.model.decode_step(tokens[:, -1:], state)

    def select(self, state, hyp, token):
        return state.reorder(hyp)


class LengthBonus(Scorer):
    """+1 per emitted token: with a weight, counters the search's bias toward short outputs."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def init_state(self, beam_size):
        return None

    def score(self, tokens, state):
        return tokens.new_ones(tokens.size(0), self.vocab_size, dtype=torch.float32), None

    def select(self, state, hyp, token):
        return None


class TokenSearch(ABC):
    """Chooses the next tokens from weighted scores; owns the finished hypotheses."""

    def __init__(self, eos: int, max_lengths: Tensor, options: DecodingOptions):
        self.eos, self.max_lengths, self.options = eos, max_lengths, options
        self.batch_size = max_lengths.size(0)

    @abstractmethod
    def update(self, tokens: Tensor, logprobs: Tensor) -> tuple[Tensor, Tensor, Tensor, bool]:
        """tokens (N, t), logprobs (N, V) -> (new tokens (N, t+1), hyp (N,), token (N,), done)."""

    @abstractmethod
    def finalize(self, tokens: Tensor) -> list[list[Hypothesis]]:
        """Per utterance, hypotheses sorted best first."""

    def _normalise(self, logprob: float, length: int) -> float:
        return normalise(logprob, length, self.options.length_penalty)


class GreedySearch(TokenSearch):
    def __init__(self, eos, max_lengths, options):
        super().__init__(eos, max_lengths, options)
        self.sum_logprobs = torch.zeros(self.batch_size)
        self.finished = torch.zeros(self.batch_size, dtype=torch.bool)

    def update(self, tokens, logprobs):
        step = tokens.size(1) - 1  # tokens emitted so far
        if step < self.options.min_len:
            logprobs = logprobs.clone()
            logprobs[:, self.eos] = -float("inf")
        best_logprob, token = logprobs.max(dim=-1)
        token = token.masked_fill(self.finished.to(token.device), self.eos)
        self.sum_logprobs += best_logprob.float().cpu().masked_fill(self.finished, 0.0)
        self.finished |= (token == self.eos).cpu() | (step + 1 >= self.max_lengths)
        hyp = torch.arange(tokens.size(0), device=tokens.device)
        return torch.cat([tokens, token[:, None]], dim=1), hyp, token, bool(self.finished.all())

    def finalize(self, tokens):
        out = []
        for b in range(self.batch_size):
            seq = tokens[b, 1:].tolist()
            ended = self.eos in seq
            seq = seq[: seq.index(self.eos)] if ended else seq
            length = len(seq) + int(ended)
            out.append([Hypothesis(seq, self._normalise(float(self.sum_logprobs[b]), length),
                                   float(self.sum_logprobs[b]), hit_max_len=not ended)])
        return out


class BeamSearch(TokenSearch):
    """Batched beam search: B utterances x K beams decoded as one (B*K)-row batch.

    Each step takes the 2K best extensions per utterance; those ending in EOS and ranked in
    the top K are finished, the best K others live on. An utterance is done once it has K
    finished hypotheses or reaches its maximum length.
    """

    def __init__(self, eos, max_lengths, options):
        super().__init__(eos, max_lengths, options)
        K = options.beam_size
        self.scores = torch.full((self.batch_size, K), -float("inf"))
        self.scores[:, 0] = 0.0  # all beams start identical: keep one so the first step fans out
        self.finished: list[list[Hypothesis]] = [[] for _ in range(self.batch_size)]
        self.done = torch.zeros(self.batch_size, dtype=torch.bool)

    def update(self, tokens, logprobs):
        B, K = self.scores.shape
        V = logprobs.size(-1)
        step = tokens.size(1) - 1
        logprobs = logprobs.float().cpu()
        if step < self.options.min_len:
            logprobs[:, self.eos] = -float("inf")
        candidates = (self.scores.view(B * K, 1) + logprobs).view(B, K * V)
        top_scores, top_index = candidates.topk(min(2 * K, K * V), dim=1)  # (B, 2K)
        hyp, token = top_index // V, top_index % V
        is_eos = token == self.eos
        self._finish_eos(tokens, top_scores, hyp, is_eos, step, K)

        alive_scores, order = top_scores.masked_fill(is_eos, -float("inf")).topk(K, dim=1)
        row = (hyp.gather(1, order) + torch.arange(B)[:, None] * K).view(-1)  # (B*K,)
        next_token = token.gather(1, order).view(-1)
        self.scores = alive_scores
        new_tokens = torch.cat([tokens[row.to(tokens.device)], next_token[:, None].to(tokens.device)], 1)

        at_cap = (step + 1 >= self.max_lengths) & ~self.done
        for b in at_cap.nonzero().flatten().tolist():
            for k in range(K):
                if torch.isfinite(self.scores[b, k]):
                    self._add(b, new_tokens[b * K + k, 1:].tolist(), float(self.scores[b, k]), True)
        self.done |= at_cap
        self.done |= torch.tensor([len(f) >= K for f in self.finished])
        self.scores[self.done] = -float("inf")  # finished utterances propose nothing more
        device = tokens.device
        return new_tokens, row.to(device), next_token.to(device), bool(self.done.all())

    def _finish_eos(self, tokens, top_scores, hyp, is_eos, step, K):
        ranked = torch.arange(top_scores.size(1))[None, :] < K
        for b, j in (is_eos & ranked & ~self.done[:, None]).nonzero().tolist():
            if torch.isfinite(top_scores[b, j]) and len(self.finished[b]) < K:
                seq = tokens[b * K + hyp[b, j], 1:].tolist()
                self._add(b, seq, float(top_scores[b, j]), False, eos=True)

    def _add(self, b, seq, logprob, hit_max_len, eos=False):
        length = len(seq) + int(eos)
        self.finished[b].append(Hypothesis(seq, self._normalise(logprob, length), logprob, hit_max_len))

    def finalize(self, tokens):
        return [sorted(f, key=lambda h: h.score, reverse=True) for f in self.finished]


@dataclass
class _Scored:
    logprobs: Tensor
    states: dict = field(default_factory=dict)


def _score(scorers: dict[str, Scorer], weights: dict[str, float], tokens: Tensor, states: dict,
           pre_beam: int) -> _Scored:
    """Weighted sum of the scorers' (N, V) log-probs. With `pre_beam` > 0 and a full scorer to
    rank by, partial scorers score only each row's `pre_beam` best tokens by the full scorers'
    sum; every other token gets -inf."""
    partial = {n for n, s in scorers.items() if isinstance(s, PartialScorer)} if pre_beam else set()
    if len(partial) == len(scorers):
        partial = set()
    out = _Scored(logprobs=None)
    for name in [n for n in scorers if n not in partial]:
        logprobs, out.states[name] = scorers[name].score(tokens, states[name])
        weighted = weights.get(name, 1.0) * logprobs.float()
        out.logprobs = weighted if out.logprobs is None else out.logprobs + weighted
    if partial:
        candidates = out.logprobs.topk(min(pre_beam, out.logprobs.size(-1)), dim=-1).indices  # (N, C)
        total = out.logprobs.gather(1, candidates)
        for name in partial:
            logprobs, out.states[name] = scorers[name].score_partial(tokens, states[name], candidates)
            total = total + weights.get(name, 1.0) * logprobs.float()
        out.logprobs = torch.full_like(out.logprobs, -float("inf")).scatter(1, candidates, total)
    return out


@torch.no_grad()
def decode(
    scorers: dict[str, Scorer],
    weights: dict[str, float],
    sos: int,
    eos: int,
    source_lengths: Tensor,
    options: DecodingOptions = DecodingOptions(),
    search: type[TokenSearch] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[list[Hypothesis]]:
    """Decode a batch; returns per utterance up to `options.n_best` hypotheses, best first.

    Args:
        source_lengths: (B,) encoder output lengths, for the maximum output length.
        search: the search to run; None: GreedySearch at beam size 1, else BeamSearch.
        should_stop: asked before every step; True abandons the search with `Stopped`
            (a caller that cancels work stops it here, not after the last token).
    """
    unknown = set(weights) - set(scorers)
    if unknown:
        raise ValueError(f"weights given for unknown scorers: {sorted(unknown)}")
    K = options.beam_size
    max_lengths = options.max_lengths(source_lengths.cpu())
    search = (search or (GreedySearch if K == 1 else BeamSearch))(eos, max_lengths, options)
    device = source_lengths.device
    tokens = torch.full((len(source_lengths) * K, 1), sos, dtype=torch.long, device=device)
    states = {name: scorer.init_state(K) for name, scorer in scorers.items()}
    for _ in range(int(max_lengths.max())):
        stop_if(should_stop)
        scored = _score(scorers, weights, tokens, states, options.pre_beam)
        tokens, hyp, token, done = search.update(tokens, scored.logprobs)
        states = {name: scorers[name].select(scored.states[name], hyp, token) for name in scorers}
        if done:
            break
    return [h[: options.n_best] for h in search.finalize(tokens)]
