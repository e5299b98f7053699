"""Speech-Transformer for recognition: convolutional subsampling, a Transformer encoder with a
CTC head, and an autoregressive Transformer decoder with cross-attention (joint CTC/attention,
Kim, Hori and Watanabe 2017).

An optional second decoder reads the target right to left (`n_r2l_decoder_layers`; WeNet's
U2++, Wu et al. 2021): it rescores the left-to-right beam search's finished hypotheses from the
other end, where a word's spelling is conditioned on the words after it.

Token ids: 0 is the CTC blank and the padding, 1 is both SOS and EOS (ESPnet's convention);
subword pieces start at 2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.transformer import (
    Decoder,
    DecoderState,
    Encoder,
    ScaledPositionalEncoding,
    lengths_to_mask,
)


@dataclass(frozen=True)
class ASRDims:
    vocab_size: int
    n_mels: int = 80
    subsampling: int = 8  # 4 or 8: frames per encoder position
    conv_channels: int = 64  # the subsampling convolutions cost more than the encoder at 128
    d_model: int = 192
    n_heads: int = 4
    d_ff: int = 768
    n_encoder_layers: int = 8
    n_decoder_layers: int = 3
    dropout: float = 0.1
    cross_attention: str = "dot"
    n_r2l_decoder_layers: int = 0  # a right-to-left decoder for rescoring (0: none)
    blank: int = 0
    sos: int = 1
    eos: int = 1

    def __post_init__(self) -> None:
        if self.subsampling not in (4, 8):
            raise ValueError("subsampling must be 4 or 8")

    def to_dict(self) -> dict:
        return asdict(self)


class ConvSubsampling(nn.Module):
    """Stride-2 3x3 convolutions over (time, mel): 2 of them for 4x, 3 for 8x.

    No padding, so an output frame only ever sees valid input frames (padding invariance).
    """

    def __init__(self, n_mels: int, channels: int, d_model: int, factor: int):
        super().__init__()
        n = int(math.log2(factor))
        self.convs = nn.ModuleList(
            nn.Conv2d(1 if i == 0 else channels, channels, 3, stride=2) for i in range(n)
        )
        # channels-last kernels run the subsampling ~2x faster on a CPU, the same numbers
        # (loading a state dict copies into these tensors and keeps their layout)
        self.convs.to(memory_format=torch.channels_last)
        freq = n_mels
        for _ in range(n):
            freq = (freq - 3) // 2 + 1
        self.proj = nn.Linear(channels * freq, d_model)

    @staticmethod
    def output_lengths(lengths: Tensor, n_convs: int) -> Tensor:
        for _ in range(n_convs):
            lengths = torch.div(lengths - 3, 2, rounding_mode="floor") + 1
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, n_mels) -> (B, T', d_model), (B,) T' lengths."""
        h = x[:, None]  # (B, 1, T, F)
        for conv in self.convs:
            h = torch.relu_(conv(h))
        B, C, T, Fq = h.size()
        h = self.proj(h.transpose(1, 2).reshape(B, T, C * Fq))  # (B, C, T, F) -> (B, T, C*F)
        return h, self.output_lengths(lengths, len(self.convs)).clamp_min(1)

    @staticmethod
    def min_input_frames(factor: int) -> int:
        """The shortest input that still yields one output frame."""
        return 2 * factor - 1


class SpeechTransformer(nn.Module):
    def __init__(self, dims: ASRDims):
        super().__init__()
        self.dims = dims
        D = dims.d_model
        self.subsample = ConvSubsampling(dims.n_mels, dims.conv_channels, D, dims.subsampling)
        self.encoder_pos = ScaledPositionalEncoding(D, dropout=dims.dropout)
        self.encoder = Encoder(D, dims.n_heads, dims.d_ff, dims.n_encoder_layers, dims.dropout)
        self.ctc_head = nn.Linear(D, dims.vocab_size)
        self.embed = nn.Embedding(dims.vocab_size, D)
        self.decoder_pos = ScaledPositionalEncoding(D, dropout=dims.dropout)
        self.decoder = Decoder(D, dims.n_heads, dims.d_ff, dims.n_decoder_layers, dims.dropout,
                               dims.cross_attention)
        self.out = nn.Linear(D, dims.vocab_size)
        self.r2l = nn.ModuleDict(dict(  # the same parts as the left-to-right decoder's
            embed=nn.Embedding(dims.vocab_size, D),
            pos=ScaledPositionalEncoding(D, dropout=dims.dropout),
            decoder=Decoder(D, dims.n_heads, dims.d_ff, dims.n_r2l_decoder_layers, dims.dropout,
                            dims.cross_attention),
            out=nn.Linear(D, dims.vocab_size),
        )) if dims.n_r2l_decoder_layers else None

    def init_r2l_from_l2r(self) -> None:
        """Start the right-to-left decoder as a copy of the left-to-right one (same depth): its
        embeddings, cross-attention and output layer already fit the encoder."""
        if self.r2l is None or self.dims.n_r2l_decoder_layers != self.dims.n_decoder_layers:
            raise ValueError("init_r2l_from_l2r needs a right-to-left decoder as deep as the other")
        for name, module in self._parts(reverse=False).items():
            self.r2l[name].load_state_dict(module.state_dict())

    def _parts(self, reverse: bool) -> dict[str, nn.Module]:
        if not reverse:
            return dict(embed=self.embed, pos=self.decoder_pos, decoder=self.decoder, out=self.out)
        if self.r2l is None:
            raise ValueError("this model has no right-to-left decoder")
        return dict(self.r2l.items())

    def encode(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, T, n_mels) normalised log-mel -> memory (B, S, D), mask (B, S)."""
        x, out_lengths = self.subsample(features, lengths)
        mask = lengths_to_mask(out_lengths, x.size(1))
        return self.encoder(self.encoder_pos(x), mask), mask

    def ctc_logprobs(self, memory: Tensor) -> Tensor:
        """(B, S, D) -> (B, S, V)."""
        return self.ctc_head(memory).float().log_softmax(dim=-1)

    def _decoder_logprobs(self, h: Tensor, out: nn.Linear) -> Tensor:
        logits = out(h).float()
        logits[..., self.dims.blank] = -1e4  # the decoder never emits blank/padding
        return logits.log_softmax(dim=-1)

    def forward(self, memory: Tensor, mask: Tensor, tokens_in: Tensor,
                reverse: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Teacher forcing: tokens_in (B, L) starting with SOS -> (B, L, V) log-probs; with
        `reverse`, the right-to-left decoder's (tokens_in then holds the target reversed)."""
        parts = self._parts(reverse)
        x = parts["pos"](parts["embed"](tokens_in) * math.sqrt(self.dims.d_model))
        h, weights, _ = parts["decoder"](x, memory, mask)
        return self._decoder_logprobs(h, parts["out"]), weights

    def attention_loss(self, memory: Tensor, mask: Tensor, targets: Tensor,
                       target_lengths: Tensor, label_smoothing: float = 0.1,
                       reverse: bool = False) -> tuple[Tensor, Tensor]:
        """Label-smoothed cross-entropy of one decoder, summed over tokens and EOS, averaged
        over the batch, and its token accuracy. targets (B, L) without SOS/EOS, padded with 0;
        `reverse` trains the right-to-left decoder on each target reversed."""
        att, accuracy, _, _ = self._attention_loss(memory, mask, targets, target_lengths,
                                                   label_smoothing, reverse)
        return att, accuracy

    def _attention_loss(self, memory, mask, targets, target_lengths, label_smoothing, reverse):
        """`attention_loss`, the decoder's log-probabilities (B, L + 1, V) and their mask."""
        tokens_in, tokens_out, valid = self._teacher_forcing(targets, target_lengths, reverse)
        logprobs, _ = self(memory, mask, tokens_in, reverse=reverse)
        nll = -logprobs.gather(-1, tokens_out[..., None]).squeeze(-1)
        smooth = -logprobs[..., 2:].mean(-1)  # spread over real tokens only
        smoothed = (1 - label_smoothing) * nll + label_smoothing * smooth
        att = smoothed[valid].sum() / targets.size(0)
        return att, (logprobs.argmax(-1) == tokens_out)[valid].float().mean(), logprobs, valid

    @torch.no_grad()
    def soft_targets(self, features: Tensor, lengths: Tensor, targets: Tensor,
                     target_lengths: Tensor, rows: Tensor) -> "SoftTargets":
        """This model's CTC and decoder (teacher-forced) distributions for the batch, for a
        student to distil on `rows` (B,) bool."""
        memory, mask = self.encode(features, lengths)
        tokens_in, _, _ = self._teacher_forcing(targets, target_lengths, reverse=False)
        decoder, _ = self(memory, mask, tokens_in)
        return SoftTargets(self.ctc_logprobs(memory), decoder, rows)

    def _teacher_forcing(self, targets: Tensor, lengths: Tensor,
                         reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
        """targets (B, L) padded with 0 -> the decoder's inputs (B, L + 1) starting with SOS,
        its outputs (B, L + 1) ending in EOS, and the mask of those outputs; `reverse`: each
        target read from its end."""
        if reverse:
            targets = reverse_padded(targets, lengths)
        B = targets.size(0)
        sos = targets.new_full((B, 1), self.dims.sos)
        tokens_in = torch.cat([sos, targets], dim=1)  # (B, L + 1)
        tokens_out = torch.cat([targets, targets.new_zeros(B, 1)], dim=1)
        tokens_out[torch.arange(B, device=targets.device), lengths] = self.dims.eos
        return tokens_in, tokens_out, lengths_to_mask(lengths + 1, tokens_out.size(1))

    def loss(self, features: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor,
             ctc_weight: float = 0.3, label_smoothing: float = 0.1,
             reverse_weight: float = 0.0, teacher: "SoftTargets | None" = None,
             distil_weight: float = 0.0) -> dict[str, Tensor]:
        """targets (B, L) token ids without SOS/EOS, padded with 0. `reverse_weight`: the
        right-to-left decoder's share of the attention loss. `teacher`: another model's
        distributions on this batch (`soft_targets`); on its rows the loss adds `distil_weight`
        times the KL divergence from them, CTC's and the decoder's weighted as their losses."""
        memory, mask = self.encode(features, lengths)
        ctc_logprobs = self.ctc_logprobs(memory)
        ctc = F.ctc_loss(
            ctc_logprobs.transpose(0, 1), targets, mask.sum(1), target_lengths,
            blank=self.dims.blank, reduction="sum", zero_infinity=True,
        ) / targets.size(0)
        att, correct, decoder_logprobs, valid = self._attention_loss(
            memory, mask, targets, target_lengths, label_smoothing, reverse=False)
        out = {"ctc": ctc.detach(), "attention": att.detach(), "accuracy": correct}
        distil = None
        if teacher is not None and distil_weight > 0:
            kl_ctc, kl_att = teacher.divergence(ctc_logprobs, mask, decoder_logprobs, valid)
            out.update(distil_ctc=kl_ctc.detach(), distil_attention=kl_att.detach())
            distil = distil_weight * (ctc_weight * kl_ctc + (1 - ctc_weight) * kl_att)
        if reverse_weight > 0:
            r2l, out["accuracy_r2l"] = self.attention_loss(memory, mask, targets, target_lengths,
                                                           label_smoothing, reverse=True)
            out["attention_r2l"] = r2l.detach()
            att = (1 - reverse_weight) * att + reverse_weight * r2l
        loss = ctc_weight * ctc + (1 - ctc_weight) * att
        return {"loss": loss if distil is None else loss + distil, **out}

    @torch.no_grad()
    def score_reversed(self, memory: Tensor, mask: Tensor, hypotheses: list[list[int]]) -> Tensor:
        """The right-to-left decoder's log-probability of each hypothesis (its tokens read from
        the end, then EOS), for rescoring. memory (N, S, D), mask (N, S): row n's encoding;
        hypotheses: N token lists -> (N,) summed log-probs."""
        rows = [torch.tensor(h, dtype=torch.long, device=memory.device) for h in hypotheses]
        targets = nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (N, L), 0 = padding
        lengths = torch.tensor([len(h) for h in hypotheses], device=memory.device)
        tokens_in, tokens_out, valid = self._teacher_forcing(targets, lengths, reverse=True)
        logprobs, _ = self(memory, mask, tokens_in, reverse=True)  # (N, L + 1, V)
        picked = logprobs.gather(-1, tokens_out[..., None]).squeeze(-1)
        return picked.masked_fill(~valid, 0.0).sum(1)

    # the StepModel protocol of models.decoding.DecoderScorer

    @property
    def shares_context_across_beams(self) -> bool:
        """Dot cross-attention (no per-hypothesis alignment state) lets beam search keep the
        memory once per utterance: its hypotheses attend to that copy together."""
        return self.dims.cross_attention == "dot"

    def init_decoder(self, memory: Tensor, memory_mask: Tensor, reverse: bool = False):
        decoder = self._parts(reverse)["decoder"]
        return _ASRDecoderState(decoder.init_state(memory, memory_mask), memory, memory_mask)

    def decode_step(self, tokens: Tensor, state: "_ASRDecoderState", reverse: bool = False):
        parts = self._parts(reverse)
        x = parts["embed"](tokens) * math.sqrt(self.dims.d_model)
        x = parts["pos"](x, state.decoder.offset)
        h, _, dec = parts["decoder"](x, state.memory, state.mask, state.decoder)
        logprobs = self._decoder_logprobs(h, parts["out"])[:, -1]
        return logprobs, _ASRDecoderState(dec, state.memory, state.mask)


class RightToLeftSteps:
    """A model's right-to-left decoder as a `models.decoding.StepModel`: a search with it
    spells the transcript from its last token (reverse the result)."""

    def __init__(self, model: SpeechTransformer):
        self.model = model

    @property
    def shares_context_across_beams(self) -> bool:
        return self.model.shares_context_across_beams

    def init_decoder(self, memory: Tensor, memory_mask: Tensor):
        return self.model.init_decoder(memory, memory_mask, reverse=True)

    def decode_step(self, tokens: Tensor, state: "_ASRDecoderState"):
        return self.model.decode_step(tokens, state, reverse=True)


@dataclass
class SoftTargets:
    """A teacher's distributions on a batch, for distillation (Hinton et al. 2015; kept on
    the data a model already knows while it learns new data, it is Learning without
    Forgetting, Li and Hoiem 2016)."""

    ctc: Tensor  # (B, S, V) CTC log-probabilities
    decoder: Tensor  # (B, L + 1, V) teacher-forced decoder log-probabilities
    rows: Tensor  # (B,) bool: the utterances distilled

    def divergence(self, ctc: Tensor, ctc_valid: Tensor, decoder: Tensor,
                   decoder_valid: Tensor) -> tuple[Tensor, Tensor]:
        """A student's KL divergence from these distributions, CTC's and the decoder's: each
        summed over the valid (B, T) positions of the rows distilled and averaged over the
        batch (the scale of the losses beside it). ctc (B, S, V), decoder (B, L + 1, V): the
        student's log-probabilities."""
        return (self._kl(ctc, self.ctc, ctc_valid), self._kl(decoder, self.decoder, decoder_valid))

    def _kl(self, student: Tensor, teacher: Tensor, valid: Tensor) -> Tensor:
        kl = F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)  # (B, T)
        return kl[valid & self.rows[:, None]].sum() / student.size(0)


def reverse_padded(tokens: Tensor, lengths: Tensor) -> Tensor:
    """(B, L) padded rows -> each row's first lengths[b] entries reversed, the padding kept."""
    L = tokens.size(1)
    positions = torch.arange(L, device=tokens.device)[None, :]  # (1, L)
    source = torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)
    return tokens.gather(1, source)


@dataclass
class _ASRDecoderState:
    decoder: DecoderState
    memory: Tensor
    mask: Tensor

    def reorder(self, indices: Tensor) -> "_ASRDecoderState":
        # memory is shared by the beams of one utterance: no re-indexing needed
        return _ASRDecoderState(self.decoder.reorder(indices), self.memory, self.mask)
