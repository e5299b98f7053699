"""Attention: multi-head scaled dot-product self-attention with a KV cache, and three
cross-attention variants behind one interface.

Every cross-attention variant is called the same way:

    context, weights, state = attention(query, memory, memory_mask, state)

    query:       (B, T, D) decoder states for T consecutive output steps
    memory:      (B, S, D) encoder output
    memory_mask: (B, S) bool, True at valid memory positions
    state:       the variant's own state after the step before the first query, or None
    context:     (B, T, D)
    weights:     (B, H, T, S) attention weights, rows sum to 1 over valid positions

A full teacher-forced pass (T = whole target) and T calls with one step each compute the same
function; tests hold every variant to that. The memory projection is computed once per
utterance and kept in the state.

Variants, chosen by name with `build_cross_attention`:
    dot        multi-head scaled dot-product (Vaswani et al. 2017)
    location   location-aware, "hybrid" attention (Chorowski et al. 2015): additive energies that
               also see a convolution over the previous and cumulative weights
    monotonic  stepwise monotonic attention (He et al. 2019): the alignment either stays or moves
               one position per step; soft expected alignment in training, hard at inference

At inference, `dot` and `location` can be held to a monotonic window (`AttentionState.window`):
the focus never moves backwards and at most `ahead` positions per step; with `max_dwell` it must
also move on after that many steps on one position (a stalled alignment otherwise repeats one
sound until the length cap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEG_INF = -1e9  # finite: a fully masked row must not produce NaN


# ----------------------------------------------------------------------------- self-attention


class KVCache:
    """Keys and values of the positions decoded so far, per self-attention module.

    Kept out of the attention maths (whisper's way): the module asks the cache to append the
    new step's keys/values and gets the full history back. Storage grows by doubling, so a
    step costs O(1) copying rather than re-concatenating the whole history.
    """

    def __init__(self) -> None:
        self._store: dict[nn.Module, list] = {}  # module -> [keys, values, length]
        self._spare: dict[nn.Module, tuple[Tensor, Tensor]] = {}  # reorder's target buffers

    def update(self, module: nn.Module, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k, v: (B, H, T_new, dh) -> full (B, H, T_past + T_new, dh)."""
        entry = self._store.get(module)
        if entry is None:  # the first call keeps the tensors as they are (autograd-friendly)
            self._store[module] = [k, v, k.size(2)]
            return k, v
        keys, values, length = entry
        end = length + k.size(2)
        if end > keys.size(2):
            B, H, _, dh = k.size()
            capacity = max(2 * end, 16)
            grown_k, grown_v = k.new_empty(B, H, capacity, dh), v.new_empty(B, H, capacity, dh)
            grown_k[:, :, :length], grown_v[:, :, :length] = keys[:, :, :length], values[:, :, :length]
            keys, values = grown_k, grown_v
        keys[:, :, length:end], values[:, :, length:end] = k, v
        self._store[module] = [keys, values, end]
        return keys[:, :, :end], values[:, :, :end]

    def reorder(self, indices: Tensor) -> None:
        """Keep the history of hypotheses `indices` (beam search), in that order. The positions
        decoded so far are gathered into a second buffer of the same size, which then swaps
        with the first: no allocation, and no copying of the unused capacity."""
        for module, (keys, values, length) in self._store.items():
            if torch.is_grad_enabled() and (keys.requires_grad or values.requires_grad):
                self._store[module] = [keys[indices], values[indices], length]  # out= has no grad
                continue
            shape = (len(indices), *keys.shape[1:])
            spare_k, spare_v = self._spare.get(module, (None, None))
            if spare_k is None or spare_k.shape != shape:
                spare_k, spare_v = keys.new_empty(shape), values.new_empty(shape)
            torch.index_select(keys[:, :, :length], 0, indices, out=spare_k[:, :, :length])
            torch.index_select(values[:, :, :length], 0, indices, out=spare_v[:, :, :length])
            self._store[module] = [spare_k, spare_v, length]
            self._spare[module] = (keys, values)


def _split_heads(x: Tensor, n_heads: int) -> Tensor:
    B, T, C = x.size()
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, T, C) -> (B, H, T, dh)


def _merge_heads(x: Tensor) -> Tensor:
    B, H, T, dh = x.size()
    return x.transpose(1, 2).reshape(B, T, H * dh)  # (B, H, T, dh) -> (B, T, C)


def scaled_dot_product(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, need_weights: bool = True
) -> tuple[Tensor, Tensor | None]:
    """q (B, H, T, dh), k/v (B, H, S, dh), mask broadcastable to (B, H, T, S), True = attend."""
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
    energies = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, S)
    if mask is not None:
        energies = energies.masked_fill(~mask, NEG_INF)
    weights = energies.softmax(dim=-1)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention for self-attention (causal or padded)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, D); mask broadcastable to (B, H, T, T_past + T), True = attend."""
        q, k, v = (_split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        if cache is not None:
            k, v = cache.update(self, k, v)
        if not need_weights:
            dropout = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            return self.out(_merge_heads(out)), None
        out, weights = scaled_dot_product(q, k, v, mask, need_weights=True)
        return self.out(_merge_heads(out)), weights


# ----------------------------------------------------------------------------- cross-attention


@dataclass
class AttentionState:
    """What every cross-attention variant carries between steps.

    keys/values are the projected memory, computed once per utterance. Beam search only ever
    re-indexes hypotheses of the same utterance, which share that memory, so `reorder` leaves
    them alone. `window` = (back, ahead) turns on the monotonic inference constraint; `focus`
    is then the position attended at the last step, and `dwell` the steps it has stayed there.
    """

    keys: Tensor  # (B, H, S, dk)
    values: Tensor  # (B, H, S, dh)
    window: tuple[int, int] | None = None
    focus: Tensor | None = None  # (B,) long
    max_dwell: int | None = None  # steps on one position before the window moves on
    dwell: Tensor | None = None  # (B,) long

    def reorder(self, indices: Tensor) -> "AttentionState":
        if self.focus is None:
            return self
        return replace(self, focus=self.focus[indices], dwell=self.dwell[indices])

    @classmethod
    def start(cls, keys: Tensor, values: Tensor, window: tuple[int, int] | None,
              max_dwell: int | None = None, **extra) -> "AttentionState":
        """A first step's state; with a window, the focus starts on the first position."""
        if window is None:
            return cls(keys, values, **extra)
        zeros = keys.new_zeros(keys.size(0), dtype=torch.long)
        return cls(keys, values, window, zeros, max_dwell, zeros.clone(), **extra)


class CrossAttention(nn.Module):
    """Base class: memory projection, the window constraint and the step loop."""

    n_heads: int

    def init_state(
        self, memory: Tensor, memory_mask: Tensor, window: tuple[int, int] | None = None,
        max_dwell: int | None = None,
    ) -> AttentionState:
        raise NotImplementedError

    def forward(
        self,
        query: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        state: AttentionState | None = None,
    ) -> tuple[Tensor, Tensor, AttentionState]:
        raise NotImplementedError

    @staticmethod
    def _window_mask(state: AttentionState, memory_mask: Tensor) -> Tensor:
        """(B, S) bool: positions allowed by the monotonic window around the last focus."""
        back, ahead = state.window
        pos = torch.arange(memory_mask.size(1), device=memory_mask.device)[None, :]
        focus = state.focus[:, None]
        lowest = focus - back
        if state.max_dwell is not None:  # stayed too long: the next position (or the last one)
            last = memory_mask.sum(dim=1, keepdim=True) - 1
            stalled = state.dwell[:, None] >= state.max_dwell
            lowest = torch.where(stalled, torch.minimum(focus + 1, last), lowest)
        allowed = (pos >= lowest) & (pos <= focus + ahead) & memory_mask
        return allowed | (~allowed.any(dim=1, keepdim=True) & memory_mask)

    @staticmethod
    def _moved(state: AttentionState, weights: Tensor) -> AttentionState:
        """New focus: the argmax of the head-averaged weights, never behind the old one."""
        focus = torch.maximum(state.focus, weights.mean(dim=1).argmax(dim=-1))
        dwell = torch.where(focus == state.focus, state.dwell + 1, torch.zeros_like(state.dwell))
        return replace(state, focus=focus, dwell=dwell)


def _hypotheses_over_shared_memory(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Beam search's K hypotheses per utterance against memory kept once per utterance.

    q (B*K, H, T, dh), utterance b's hypotheses in rows b*K .. b*K+K-1; k/v (B, H, S, dh); mask
    (B, S). Each utterance's K*T queries go through one matrix product with its keys, instead
    of K products with K copies of them. Returns context (B*K, H, T, dh), weights (B*K, H, T, S).
    """
    B, H, S, dh = k.shape
    N, _, T, _ = q.shape
    if N % B:
        raise ValueError(f"{N} query rows do not divide among {B} utterances")
    K = N // B
    grouped = q.reshape(B, K, H, T, dh).transpose(1, 2).reshape(B, H, K * T, dh)
    context, weights = scaled_dot_product(grouped, k, v, mask[:, None, None, :], True)
    context = context.reshape(B, H, K, T, dh).transpose(1, 2).reshape(N, H, T, dh)
    return context, weights.reshape(B, H, K, T, S).transpose(1, 2).reshape(N, H, T, S)


class DotCrossAttention(CrossAttention):
    """Multi-head scaled dot-product cross-attention."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def init_state(self, memory, memory_mask, window=None, max_dwell=None):
        k, v = (_split_heads(t, self.n_heads) for t in self.kv(memory).chunk(2, dim=-1))
        return AttentionState.start(k, v, window, max_dwell)

    def forward(self, query, memory, memory_mask, state=None):
        state = state or self.init_state(memory, memory_mask)
        q = _split_heads(self.q(query), self.n_heads)
        mask = memory_mask
        if state.window is not None:
            if query.size(1) != 1:
                raise ValueError("the monotonic window applies to one step at a time")
            mask = self._window_mask(state, memory_mask)
        if q.size(0) != state.keys.size(0) and state.window is None:
            context, weights = _hypotheses_over_shared_memory(q, state.keys, state.values, mask)
        else:
            context, weights = scaled_dot_product(q, state.keys, state.values, mask[:, None, None, :], True)
        if state.window is not None:
            state = self._moved(state, weights[:, :, -1])
        return self.out(_merge_heads(self.drop(context))), weights, state


@dataclass
class LocationState(AttentionState):
    prev: Tensor | None = None  # (B, H, S) weights of the last step
    cum: Tensor | None = None  # (B, H, S) sum of all weights so far

    def reorder(self, indices):
        return replace(super().reorder(indices), prev=self.prev[indices], cum=self.cum[indices])


class LocationCrossAttention(CrossAttention):
    """Location-aware (hybrid) attention, multi-head.

    e_h(i, j) = w_h . tanh(W_q q_i + W_k m_j + U f_h(i, j)), with f_h = conv1d over the head's
    previous and cumulative weights (the location layer). Each head keeps its own alignment.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        attention_dim: int = 64,
        location_channels: int = 32,
        location_kernel: int = 31,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.attention_dim = attention_dim
        self.query = nn.Linear(d_model, n_heads * attention_dim, bias=False)
        self.key = nn.Linear(d_model, n_heads * attention_dim)
        self.value = nn.Linear(d_model, d_model)
        self.location_conv = nn.Conv1d(
            2, location_channels, location_kernel, padding=location_kernel // 2, bias=False
        )
        self.location_dense = nn.Linear(location_channels, attention_dim, bias=False)
        self.energy = nn.Parameter(torch.randn(n_heads, attention_dim) / math.sqrt(attention_dim))
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def init_state(self, memory, memory_mask, window=None, max_dwell=None):
        B, S, _ = memory.size()
        keys = _split_heads(self.key(memory), self.n_heads)  # (B, H, S, A)
        values = _split_heads(self.value(memory), self.n_heads)  # (B, H, S, dh)
        # start with all weight on the first position, as a decoder that has read nothing
        prev = memory.new_zeros(B, self.n_heads, S)
        prev[:, :, 0] = 1.0
        return LocationState.start(keys, values, window, max_dwell, prev=prev, cum=prev.clone())

    def location_features(self, prev: Tensor, cum: Tensor, lo: int = 0, hi: int | None = None) -> Tensor:
        """prev, cum (B, H, S) -> (B, H, hi - lo, A): the location layer at positions lo..hi-1,
        reading the alignment only within the kernel's reach of them."""
        B, H, S = prev.size()
        hi = S if hi is None else hi
        half = self.location_conv.kernel_size[0] // 2
        a, b = max(0, lo - half), min(S, hi + half)
        f = torch.stack([prev[..., a:b], cum[..., a:b]], dim=2).view(B * H, 2, b - a)  # heads share it
        f = F.pad(f, (half - (lo - a), half - (b - hi)))  # the zeros a full-length conv pads with
        f = F.conv1d(f, self.location_conv.weight).transpose(1, 2)  # (B*H, C, n) -> (B*H, n, C)
        return self.location_dense(f).view(B, H, hi - lo, self.attention_dim)

    def energies(self, q: Tensor, state: LocationState, lo: int = 0, hi: int | None = None) -> Tensor:
        """q (B, H, A) one step's projected queries -> (B, H, hi - lo) energies of positions
        lo..hi-1 (default: all)."""
        hi = state.keys.size(2) if hi is None else hi
        loc = self.location_features(state.prev, state.cum, lo, hi)
        processed = torch.tanh(q[:, :, None, :] + state.keys[:, :, lo:hi] + loc)  # (B, H, n, A)
        return (processed * self.energy[None, :, None, :]).sum(-1)

    def forward(self, query, memory, memory_mask, state=None):
        state = state or self.init_state(memory, memory_mask)
        if state.window is not None:
            if query.size(1) != 1:
                raise ValueError("the monotonic window applies to one step at a time")
            return self._windowed_step(query, memory_mask, state)
        queries = _split_heads(self.query(query), self.n_heads)  # (B, H, T, A)
        contexts, all_weights = [], []
        for t in range(query.size(1)):
            energies = self.energies(queries[:, :, t], state)  # (B, H, S)
            weights = energies.masked_fill(~memory_mask[:, None, :], NEG_INF).softmax(dim=-1)
            contexts.append(weights[:, :, None, :] @ state.values)  # (B, H, 1, dh)
            all_weights.append(weights)
            state = replace(state, prev=weights, cum=state.cum + weights)
        context = _merge_heads(torch.cat(contexts, dim=2))
        return self.out(self.drop(context)), torch.stack(all_weights, dim=2), state

    def _windowed_step(self, query: Tensor, memory_mask: Tensor, state: LocationState):
        """One inference step under the monotonic window: energies, the location layer and the
        context only over the window's positions (outside it every weight is exactly zero), so
        a step costs the window's width, not the input's length."""
        allowed = self._window_mask(state, memory_mask)  # (B, S)
        columns = allowed.any(dim=0).nonzero()
        lo, hi = int(columns[0]), int(columns[-1]) + 1
        q = _split_heads(self.query(query), self.n_heads)[:, :, 0]  # (B, H, 1, A) -> (B, H, A)
        part = self.energies(q, state, lo, hi).masked_fill(~allowed[:, None, lo:hi], NEG_INF)
        part = part.softmax(dim=-1)  # (B, H, n)
        weights = torch.zeros_like(state.prev)
        weights[..., lo:hi] = part
        context = part[:, :, None, :] @ state.values[:, :, lo:hi]  # (B, H, 1, dh)
        state = self._moved(replace(state, prev=weights, cum=state.cum + weights), weights)
        return self.out(self.drop(_merge_heads(context))), weights[:, :, None, :], state


@dataclass
class MonotonicState(AttentionState):
    alpha: Tensor | None = None  # (B, H, S) alignment of the last step
    last: Tensor | None = None  # (B,) index of the last valid memory position
    hard: bool = False  # inference: one-hot alignment that stays or moves one position
    head_dwell: Tensor | None = None  # (B, H) long: hard steps each head has stayed in place

    def reorder(self, indices):
        state = replace(super().reorder(indices), alpha=self.alpha[indices], last=self.last[indices])
        if self.head_dwell is not None:
            state = replace(state, head_dwell=self.head_dwell[indices])
        return state


class MonotonicCrossAttention(CrossAttention):
    """Stepwise monotonic attention (He et al. 2019), multi-head.

    p_i(j) = sigmoid(q_i . k_j / sqrt(d) + r) is the probability of staying at j at step i:
        alpha_i(j) = alpha_{i-1}(j) p_i(j) + alpha_{i-1}(j - 1) (1 - p_i(j - 1))
    The last valid position keeps its mass, so each row sums to 1. Training uses this soft
    expected alignment (batched over B and H, a loop over steps); with `hard=True` the
    alignment is one-hot and moves one position when p < 0.5, so it never moves backwards.
    Gaussian noise on the energies in training (Raffel et al. 2017) pushes p towards 0 or 1,
    so the soft and hard alignments agree.
    """

    def __init__(
        self, d_model: int, n_heads: int, bias_init: float = 1.0, noise_std: float = 0.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.bias = nn.Parameter(torch.full((n_heads,), bias_init))
        self.noise_std = noise_std
        self.drop = nn.Dropout(dropout)

    def init_state(self, memory, memory_mask, window=None, max_dwell=None):
        """Any `window` turns on the hard alignment: this variant's own monotonic inference
        (it stays or moves one position per step). With `max_dwell`, a head that has stayed
        that many steps on one position moves on, whatever its stay probability."""
        B, S, _ = memory.size()
        k, v = (_split_heads(t, self.n_heads) for t in self.kv(memory).chunk(2, dim=-1))
        alpha = memory.new_zeros(B, self.n_heads, S)
        alpha[:, :, 0] = 1.0
        last = memory_mask.sum(dim=1) - 1
        hard = window is not None
        head_dwell = memory.new_zeros(B, self.n_heads, dtype=torch.long) if hard else None
        return MonotonicState(k, v, max_dwell=max_dwell if hard else None, alpha=alpha, last=last,
                              hard=hard, head_dwell=head_dwell)

    def stay_probability(self, q: Tensor, k: Tensor, last: Tensor) -> Tensor:
        """q (B, H, T, dh), k (B, H, S, dh) -> p (B, H, T, S); p = 1 at and after `last`."""
        energies = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)) + self.bias[None, :, None, None]
        if self.training and self.noise_std > 0:
            energies = energies + self.noise_std * torch.randn_like(energies)
        p = torch.sigmoid(energies)
        pos = torch.arange(k.size(2), device=k.device)
        beyond = pos[None, :] >= last[:, None]  # (B, S)
        return p.masked_fill(beyond[:, None, None, :], 1.0)

    def forward(self, query, memory, memory_mask, state=None):
        state = state or self.init_state(memory, memory_mask)
        q = _split_heads(self.q(query), self.n_heads)
        p_stay = self.stay_probability(q, state.keys, state.last)  # (B, H, T, S)
        alphas = []
        alpha, dwell = state.alpha, state.head_dwell
        for t in range(query.size(1)):
            p = p_stay[:, :, t]
            if state.hard:
                alpha, dwell = self._hard_step(alpha, p, state.last, dwell, state.max_dwell)
            else:
                moved = alpha * (1.0 - p)
                alpha = alpha * p + F.pad(moved[..., :-1], (1, 0))  # shift right by one position
            alphas.append(alpha)
        weights = torch.stack(alphas, dim=2)  # (B, H, T, S)
        context = _merge_heads(weights @ state.values)
        return self.out(self.drop(context)), weights, replace(state, alpha=alpha, head_dwell=dwell)

    @staticmethod
    def _hard_step(alpha: Tensor, p: Tensor, last: Tensor, dwell: Tensor,
                   max_dwell: int | None) -> tuple[Tensor, Tensor]:
        """One-hot alpha (B, H, S): move one position where staying is less likely than not,
        or where the head has stayed `max_dwell` steps; never past `last` (B,). dwell (B, H)."""
        pos = alpha.argmax(dim=-1)  # (B, H)
        stay = p.gather(-1, pos[..., None]).squeeze(-1)
        move = stay < 0.5  # p = 1 at the last position: never moves past it
        if max_dwell is not None:
            move |= dwell >= max_dwell
        new_pos = torch.minimum(pos + move.long(), last[:, None])
        dwell = torch.where(new_pos == pos, dwell + 1, torch.zeros_like(dwell))
        return F.one_hot(new_pos, alpha.size(-1)).to(alpha.dtype), dwell


CROSS_ATTENTION = {
    "dot": DotCrossAttention,
    "location": LocationCrossAttention,
    "monotonic": MonotonicCrossAttention,
}


def build_cross_attention(name: str, d_model: int, n_heads: int, **options) -> CrossAttention:
    """A cross-attention module by name: 'dot', 'location' or 'monotonic'."""
    if name not in CROSS_ATTENTION:
        raise ValueError(f"unknown attention {name!r}; choose from {sorted(CROSS_ATTENTION)}")
    return CROSS_ATTENTION[name](d_model, n_heads, **options)
