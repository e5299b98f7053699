"""CTC prefix scoring (Watanabe et al. 2017) as a `Scorer` for joint CTC/attention decoding,
and greedy CTC decoding.

For a prefix g and every candidate token c, the prefix probability

    psi(g + c) = P(the CTC output starts with g + c | x)

is computed with the forward variables r_t^n (paths ending in a non-blank) and r_t^b (ending in
blank), vectorised over all hypotheses and the candidate tokens (the whole vocabulary, or in
beam search the few the decoder ranks best: `PartialScorer`); the scorer returns
log psi(g + c) - log psi(g). For c = EOS it returns log P(output == g) - log psi(g).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.decoding import PartialScorer

NEG_INF = -1e30


@dataclass
class CTCPrefixState:
    r: Tensor  # (T, N, 2) log forward variables of each prefix: [..., 0] non-blank, [..., 1] blank
    psi: Tensor  # (N,) log prefix probability
    last: Tensor  # (N,) last token of the prefix, -1 when empty
    length: int = 0  # labels in the prefix, the same for every hypothesis


@dataclass
class _Pending:
    state: CTCPrefixState
    r: Tensor  # (T, N, C, 2) forward variables of every scored extension
    psi: Tensor  # (N, C) log prefix probability of every scored extension
    candidates: Tensor | None  # (N, C) their tokens; None: C = V, every token in order


class CTCPrefixScorer(PartialScorer):
    """Joint CTC/attention decoding's CTC term.

    Args:
        logprobs: (B, T, V) CTC log-probabilities.
        lengths: (B,) valid frames.
        blank, eos: token ids; the scorer never proposes `blank`.
    """

    def __init__(self, logprobs: Tensor, lengths: Tensor, blank: int, eos: int):
        self.logprobs, self.lengths, self.blank, self.eos = logprobs.float(), lengths, blank, eos
        self.max_length = int(lengths.max())

    def init_state(self, beam_size):
        x = self.logprobs.repeat_interleave(beam_size, dim=0).transpose(0, 1)  # (T, N, V)
        self.x = x
        self.lengths_n = self.lengths.repeat_interleave(beam_size)
        T, N, _ = x.shape
        valid = torch.arange(T, device=x.device)[:, None] < self.lengths_n[None, :]  # (T, N)
        self.valid = valid
        r = x.new_full((T, N, 2), NEG_INF)
        # the empty prefix: all blanks so far
        r[:, :, 1] = torch.cumsum(x[:, :, self.blank].masked_fill(~valid, 0.0), dim=0)
        last = torch.full((N,), -1, dtype=torch.long, device=x.device)
        return CTCPrefixState(r, x.new_zeros(N), last)

    def score_partial(self, tokens, state, candidates):
        x, valid = self.x, self.valid
        T, N, V = x.shape
        if candidates is not None:  # (T, N, V) -> (T, N, C): only the candidates' columns
            x_c = x.gather(2, candidates[None].expand(T, -1, -1))
            token = candidates
        else:
            x_c = x
            token = torch.arange(V, device=x.device).expand(N, V)
        C = token.size(1)
        r_prev = state.r
        r_sum = torch.logaddexp(r_prev[..., 0], r_prev[..., 1])  # (T, N)
        # phi: probability mass from which c can start a new label at the next frame; a repeat
        # of the prefix's last label needs a blank between
        repeat = (token == state.last[:, None])  # (N, C); last = -1 matches nothing
        phi = torch.where(repeat[None], r_prev[..., 1, None], r_sum[..., None])  # (T, N, C)

        # r[t] holds (non-blank, phi, blank) side by side, so one logaddexp makes both new
        # forward variables of a frame from the last: n' = (n + phi) x_c, b' = (n + b) x_blank
        r = x.new_full((T, N, C, 3), NEG_INF)
        r[..., 1] = phi
        if state.length == 0:  # the empty prefix: the label may start at frame 0
            r[0, :, :, 0] = x_c[0]
        emit = torch.stack([x_c, x[:, :, self.blank, None].expand(-1, -1, C)], dim=-1)
        # L labels cannot end before frame L - 1: the earlier frames of g + c stay -inf. Frames
        # past an utterance's end are computed too and never read.
        for t in range(max(state.length, 1), self.max_length):
            torch.logaddexp(r[t - 1, :, :, :1], r[t - 1, :, :, 1:], out=r[t, :, :, 0::2])
            r[t, :, :, 0::2] += emit[t]
        r = r[..., 0::2]
        # psi(g + c): c is emitted first at some frame t, after phi up to t - 1
        starts = torch.cat([r[:1, :, :, 0], phi[:-1] + x_c[1:]])  # (T, N, C)
        psi = starts.masked_fill(~valid[:, :, None], NEG_INF).logsumexp(dim=0)
        # EOS: the output is exactly the prefix
        final = r_sum[self.lengths_n - 1, torch.arange(N, device=x.device)]  # (N,)
        psi = torch.where(token == self.eos, final[:, None], psi)
        psi = psi.masked_fill(token == self.blank, NEG_INF)
        return psi - state.psi[:, None], _Pending(state, r, psi, candidates)

    def select(self, pending, hyp, token):
        if pending.candidates is None:
            column = token
        else:  # the token's column among its hypothesis's candidates (any, if it was not one:
            # such an extension scored -inf and is never chosen over a scored one)
            column = (pending.candidates[hyp] == token[:, None]).int().argmax(dim=1)
        r = pending.r[:, hyp, column]  # (T, N, 2)
        return CTCPrefixState(r, pending.psi[hyp, column], token, pending.state.length + 1)


def ctc_greedy(logprobs: Tensor, lengths: Tensor, blank: int) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks. logprobs (B, T, V)."""
    best = logprobs.argmax(dim=-1)  # (B, T)
    out = []
    for b in range(best.size(0)):
        path = best[b, : int(lengths[b])].tolist()
        out.append([t for i, t in enumerate(path) if t != blank and (i == 0 or t != path[i - 1])])
    return out
