"""A token-to-token Transformer with an optional copy mechanism (pointer-generator).

The copy mechanism (See et al. 2017) mixes the decoder's vocabulary distribution with its
cross-attention over the source tokens:

    P(w) = g * P_vocab(w) + (1 - g) * sum_{j: x_j = w} a_j,     g = sigmoid(W [h; c])

where a is the last decoder layer's attention (head average) and c = sum_j a_j m_j its
context over the memory. Source ids at or above `vocab_size` are out of vocabulary: they are
embedded as UNK (encoder input, and decoder input when fed back), but the copy term can still
emit them, over an output space extended to the largest source id. A model can then reproduce
names, numbers and rare words it has no embedding for (text normalisation, G2P). The decoding
tests also train this model on copy and reverse tasks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.transformer import Decoder, DecoderState, Encoder, ScaledPositionalEncoding


@dataclass(frozen=True)
class Seq2SeqDims:
    vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    dropout: float = 0.0
    cross_attention: str = "dot"
    copy: bool = False  # pointer-generator output
    pad: int = 0
    sos: int = 1
    eos: int = 2
    unk: int = 3  # what out-of-vocabulary ids (>= vocab_size) are embedded as

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Seq2SeqState:
    decoder: DecoderState
    memory: Tensor  # (N, S, D)
    source: Tensor  # (N, S) source tokens, for the copy distribution

    def reorder(self, indices: Tensor) -> "Seq2SeqState":
        # memory and source are shared by the beams of one utterance: no re-indexing needed
        return Seq2SeqState(self.decoder.reorder(indices), self.memory, self.source)


class TokenTransformer(nn.Module):
    def __init__(self, dims: Seq2SeqDims):
        super().__init__()
        self.dims = dims
        D = dims.d_model
        self.embed = nn.Embedding(dims.vocab_size, D, padding_idx=dims.pad)
        self.pos = ScaledPositionalEncoding(D)
        self.encoder = Encoder(D, dims.n_heads, dims.d_ff, dims.n_encoder_layers, dims.dropout)
        self.decoder = Decoder(D, dims.n_heads, dims.d_ff, dims.n_decoder_layers, dims.dropout,
                               dims.cross_attention)
        self.proj = nn.Linear(D, dims.vocab_size)
        self.copy_gate = nn.Linear(2 * D, 1) if dims.copy else None

    def _in_vocab(self, tokens: Tensor) -> Tensor:
        return tokens.masked_fill(tokens >= self.dims.vocab_size, self.dims.unk)

    def _embed(self, tokens: Tensor, offset: int = 0) -> Tensor:
        # no sqrt(d_model) scale: position must weigh as much as identity in a model this small
        return self.pos(self.embed(self._in_vocab(tokens)), offset)

    def encode(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """source (B, S) tokens padded with `pad` -> memory (B, S, D), mask (B, S)."""
        mask = source != self.dims.pad
        return self.encoder(self._embed(source), mask), mask

    def _logprobs(self, h: Tensor, weights: Tensor, memory: Tensor, source: Tensor) -> Tensor:
        """h (B, T, D), last layer's cross weights (B, H, T, S) -> (B, T, V') log-probs;
        V' = vocab_size, or with the copy mechanism max(vocab_size, largest source id + 1)."""
        logits = self.proj(h)
        if self.copy_gate is None:
            return logits.log_softmax(dim=-1)
        attn = weights.mean(dim=1)  # (B, T, S)
        gate = torch.sigmoid(self.copy_gate(torch.cat([h, attn @ memory], dim=-1)))  # (B, T, 1)
        extended = max(self.dims.vocab_size, int(source.max()) + 1)
        generated = F.pad(gate * logits.softmax(dim=-1), (0, extended - self.dims.vocab_size))
        index = source[:, None, :].expand(-1, attn.size(1), -1)  # (B, T, S)
        copied = torch.zeros_like(generated).scatter_add(-1, index, attn * (1 - gate))
        return (generated + copied).clamp_min(1e-9).log()

    def forward(self, source: Tensor, target_in: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Teacher forcing: source (B, S), target_in (B, T) starting with SOS -> (B, T, V)."""
        memory, mask = self.encode(source)
        h, weights, _ = self.decoder(self._embed(target_in), memory, mask)
        return self._logprobs(h, weights[-1], memory, source), weights

    def loss(self, source: Tensor, target: Tensor) -> Tensor:
        """target (B, T) without SOS, ending in EOS, padded with `pad`. Without the copy
        mechanism an out-of-vocabulary target can only be learned as UNK."""
        sos = target.new_full((target.size(0), 1), self.dims.sos)
        logprobs, _ = self(source, torch.cat([sos, target[:, :-1]], dim=1))
        if self.copy_gate is None:
            target = self._in_vocab(target)
        return F.nll_loss(logprobs.transpose(1, 2), target, ignore_index=self.dims.pad)

    # the StepModel protocol of models.decoding.DecoderScorer; context = (memory, mask, source)

    def init_decoder(self, memory: Tensor, memory_mask: Tensor, source: Tensor) -> Seq2SeqState:
        return Seq2SeqState(self.decoder.init_state(memory, memory_mask), memory, source)

    def decode_step(self, tokens: Tensor, state: Seq2SeqState) -> tuple[Tensor, Seq2SeqState]:
        x = self._embed(tokens, state.decoder.offset)
        mask = state.source != self.dims.pad
        h, weights, dec = self.decoder(x, state.memory, mask, state.decoder)
        logprobs = self._logprobs(h, weights[-1], state.memory, state.source)[:, -1]
        return logprobs, Seq2SeqState(dec, state.memory, state.source)
