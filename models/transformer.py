"""Pre-norm Transformer encoder and decoder stacks with scaled positional encoding.

The decoder runs teacher-forced over a whole target or incrementally, one step at a time, with
a `DecoderState` that holds the self-attention KV cache and each layer's cross-attention state.
Both paths compute the same function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.attention import AttentionState, KVCache, MultiHeadAttention, build_cross_attention


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, T) bool mask, True at valid positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class ScaledPositionalEncoding(nn.Module):
    """x + alpha * PE(pos), sinusoidal PE with a trainable scale (Li et al. 2019).

    The scale lets a model balance the positional signal against inputs whose range differs
    from that of text embeddings (mel prenet outputs, say).
    """

    def __init__(self, d_model: int, max_len: int = 10_000, dropout: float = 0.0):
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10_000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe, persistent=False)
        self.alpha = nn.Parameter(torch.ones(1))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x (B, T, D) for positions offset..offset+T-1."""
        T = x.size(1)
        if offset + T > self.pe.size(0):
            raise ValueError(f"sequence of {offset + T} positions exceeds the maximum {self.pe.size(0)}")
        return self.drop(x + self.alpha * self.pe[offset: offset + T])


class FeedForward(nn.Module):
    """Position-wise feed-forward; with kernel > 1 a 1-D convolution (FastSpeech's FFT block)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, kernel: int = 1):
        super().__init__()
        self.kernel = kernel
        if kernel == 1:
            self.w1, self.w2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        else:
            self.w1 = nn.Conv1d(d_model, d_ff, kernel, padding=kernel // 2)
            self.w2 = nn.Conv1d(d_ff, d_model, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, T, D); mask (B, T) True = valid, zeroes padding before a convolution sees it."""
        if self.kernel == 1:
            return self.w2(self.drop(torch.relu(self.w1(x))))
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        h = torch.relu(self.w1(x.transpose(1, 2)))  # (B, T, D) -> (B, D, T)
        return self.w2(self.drop(h)).transpose(1, 2)  # (B, D, T) -> (B, T, D)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, ffn_kernel: int = 1):
        super().__init__()
        self.attn_ln = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn_ln = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout, ffn_kernel)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, S, D), mask (B, S) True = valid."""
        h, _ = self.attn(self.attn_ln(x), mask[:, None, None, :])
        x = x + self.drop(h)
        return x + self.drop(self.ffn(self.ffn_ln(x), mask))


class Encoder(nn.Module):
    """A stack of pre-norm self-attention layers over already embedded, position-coded input."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, n_layers: int, dropout: float = 0.1,
                 ffn_kernel: int = 1):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, ffn_kernel) for _ in range(n_layers)
        )
        self.ln = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, S, D), mask (B, S) True = valid -> (B, S, D)."""
        for layer in self.layers:
            x = layer(x, mask)
        return self.ln(x)


@dataclass
class DecoderState:
    """Everything the decoder carries from one incremental step to the next."""

    cross: list[AttentionState]
    cache: KVCache = field(default_factory=KVCache)
    offset: int = 0  # number of positions already decoded

    def reorder(self, indices: Tensor) -> "DecoderState":
        self.cache.reorder(indices)
        return DecoderState([s.reorder(indices) for s in self.cross], self.cache, self.offset)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, cross_attention: str,
                 attention_options: dict):
        super().__init__()
        self.self_ln = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_ln = nn.LayerNorm(d_model)
        self.cross_attn = build_cross_attention(cross_attention, d_model, n_heads, **attention_options)
        self.ffn_ln = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, memory, memory_mask, causal_mask, cache, cross_state):
        h, _ = self.self_attn(self.self_ln(x), causal_mask, cache)
        x = x + self.drop(h)
        h, weights, cross_state = self.cross_attn(self.cross_ln(x), memory, memory_mask, cross_state)
        x = x + self.drop(h)
        return x + self.drop(self.ffn(self.ffn_ln(x))), weights, cross_state


class Decoder(nn.Module):
    """A stack of pre-norm layers: causal self-attention, cross-attention, feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, n_layers: int, dropout: float = 0.1,
                 cross_attention: str = "dot", attention_options: dict | None = None):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, d_ff, dropout, cross_attention, attention_options or {})
            for _ in range(n_layers)
        )
        self.ln = nn.LayerNorm(d_model)

    def init_state(self, memory: Tensor, memory_mask: Tensor,
                   window: tuple[int, int] | None = None, max_dwell: int | None = None) -> DecoderState:
        """Project the memory once per utterance; `window` turns on monotonic inference, and
        `max_dwell` bounds the steps its focus may stay on one position."""
        return DecoderState([
            layer.cross_attn.init_state(memory, memory_mask, window, max_dwell) for layer in self.layers
        ])

    def forward(
        self, x: Tensor, memory: Tensor, memory_mask: Tensor, state: DecoderState | None = None
    ) -> tuple[Tensor, list[Tensor], DecoderState]:
        """Decode T steps after the `state.offset` already decoded.

        Args:
            x: (B, T, D) embedded, position-coded decoder inputs.
            memory: (B, S, D); memory_mask: (B, S) True = valid.
        Returns:
            (B, T, D) outputs, per-layer cross-attention weights (B, H, T, S), the new state.
        """
        state = state or self.init_state(memory, memory_mask)
        T, past = x.size(1), state.offset
        rows = torch.arange(past, past + T, device=x.device)[:, None]
        causal = rows >= torch.arange(past + T, device=x.device)[None, :]  # (T, past + T)
        cross_states, weights = [], []
        for layer, cross_state in zip(self.layers, state.cross):
            x, w, cross_state = layer(x, memory, memory_mask, causal, state.cache, cross_state)
            weights.append(w)
            cross_states.append(cross_state)
        return self.ln(x), weights, DecoderState(cross_states, state.cache, past + T)
