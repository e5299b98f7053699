"""Non-autoregressive TTS (FastSpeech, Ren et al. 2019): a duration predictor and a length
regulator replace attention, so the output length is decided before any frame is generated
and nothing can be skipped, repeated or fail to stop.

Durations for training come from outside the model: flite's phone segmentation, an
autoregressive teacher's attention (`models.tts.durations_from_attention`), or a forced
alignment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.transformer import Encoder, ScaledPositionalEncoding, lengths_to_mask


@dataclass(frozen=True)
class FastSpeechDims:
    vocab_size: int
    n_mels: int = 80
    d_model: int = 160
    n_heads: int = 2
    d_ff: int = 512
    ffn_kernel: int = 3  # the FFT block's convolution
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    dropout: float = 0.1
    duration_channels: int = 256
    postnet_channels: int = 128
    postnet_layers: int = 3
    pad: int = 0
    n_speakers: int = 0  # > 0: a speaker embedding added to the encoder's output

    def to_dict(self) -> dict:
        return asdict(self)


def length_regulate(x: Tensor, durations: Tensor) -> tuple[Tensor, Tensor]:
    """Repeat each input position by its duration.

    Args:
        x: (B, S, D); durations: (B, S) non-negative ints, zero at padding.
    Returns:
        (B, T, D) expanded and zero-padded, (B,) output lengths.
    """
    lengths = durations.sum(dim=1)
    out = x.new_zeros(x.size(0), max(int(lengths.max()), 1), x.size(2))
    for b in range(x.size(0)):
        expanded = x[b].repeat_interleave(durations[b], dim=0)
        out[b, : expanded.size(0)] = expanded
    return out, lengths


class DurationPredictor(nn.Module):
    """Two conv layers with LayerNorm -> log(1 + duration in frames) per input position."""

    def __init__(self, d_model: int, channels: int, kernel: int = 3, dropout: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv1d(d_model, channels, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.ln1, self.ln2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.proj = nn.Linear(channels, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, S, D), mask (B, S) -> (B, S) log durations, 0 at padding."""
        x = x.masked_fill(~mask[..., None], 0.0)
        h = torch.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2)  # (B, S, C)
        h = self.drop(self.ln1(h)).masked_fill(~mask[..., None], 0.0)
        h = torch.relu(self.conv2(h.transpose(1, 2))).transpose(1, 2)
        h = self.drop(self.ln2(h))
        return self.proj(h).squeeze(-1).masked_fill(~mask, 0.0)


class Postnet(nn.Module):
    """Residual conv stack refining the decoder's mel frames (Tacotron 2)."""

    def __init__(self, n_mels: int, channels: int, layers: int, kernel: int = 5, dropout: float = 0.1):
        super().__init__()
        sizes = [n_mels] + [channels] * (layers - 1) + [n_mels]
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, kernel, padding=kernel // 2) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, mel: Tensor, mask: Tensor) -> Tensor:
        """mel (B, T, n_mels), mask (B, T) -> refined mel, zero at padding.

        Padding is zeroed before every convolution, so an item's output does not depend on
        what it is batched with."""
        pad = ~mask[:, None, :]  # (B, 1, T)
        h = mel.transpose(1, 2)  # (B, T, M) -> (B, M, T)
        for i, conv in enumerate(self.convs):
            h = conv(h.masked_fill(pad, 0.0))
            if i < len(self.convs) - 1:
                h = self.drop(torch.tanh(h))
        return (mel + h.transpose(1, 2)).masked_fill(~mask[..., None], 0.0)


@dataclass
class FastSpeechOutput:
    mel: Tensor  # (B, T, n_mels) after the postnet
    mel_before: Tensor  # (B, T, n_mels) before it
    mel_lengths: Tensor  # (B,)
    log_durations: Tensor  # (B, S) predicted
    durations: Tensor  # (B, S) used for the expansion


class FastSpeech(nn.Module):
    def __init__(self, dims: FastSpeechDims):
        super().__init__()
        self.dims = dims
        D = dims.d_model
        self.embed = nn.Embedding(dims.vocab_size, D, padding_idx=dims.pad)
        self.encoder_pos = ScaledPositionalEncoding(D)
        self.encoder = Encoder(D, dims.n_heads, dims.d_ff, dims.n_encoder_layers, dims.dropout,
                               dims.ffn_kernel)
        # zero at the start, so a single-speaker model warm-starts every voice as its own
        self.speaker = nn.Embedding(dims.n_speakers, D) if dims.n_speakers else None
        if self.speaker is not None:
            nn.init.zeros_(self.speaker.weight)
        self.duration = DurationPredictor(D, dims.duration_channels, dropout=dims.dropout)
        self.decoder_pos = ScaledPositionalEncoding(D)
        self.decoder = Encoder(D, dims.n_heads, dims.d_ff, dims.n_decoder_layers, dims.dropout,
                               dims.ffn_kernel)
        self.mel_out = nn.Linear(D, dims.n_mels)
        self.postnet = Postnet(dims.n_mels, dims.postnet_channels, dims.postnet_layers,
                               dropout=dims.dropout)

    def forward(self, tokens: Tensor, durations: Tensor | None = None, speed: float = 1.0,
                speakers: Tensor | None = None) -> FastSpeechOutput:
        """tokens (B, S) padded with `pad`; durations (B, S) in frames (teacher forcing) or None
        to use the predictor's, divided by `speed`; speakers (B,) indices, with n_speakers > 0
        (None: speaker 0)."""
        mask = tokens != self.dims.pad
        h = self.encoder(self.encoder_pos(self.embed(tokens)), mask)
        if self.speaker is not None:
            if speakers is None:
                speakers = tokens.new_zeros(tokens.size(0))
            h = h + self.speaker(speakers)[:, None, :]  # (B, D) -> (B, 1, D)
        elif speakers is not None and bool((speakers != 0).any()):
            raise ValueError("this model has one speaker")
        log_durations = self.duration(h, mask)
        if durations is None:
            durations = self.predict_durations(log_durations, mask, speed)
        expanded, mel_lengths = length_regulate(h, durations)
        mel_mask = lengths_to_mask(mel_lengths, expanded.size(1))
        y = self.decoder(self.decoder_pos(expanded), mel_mask)
        mel_before = self.mel_out(y).masked_fill(~mel_mask[..., None], 0.0)
        mel = self.postnet(mel_before, mel_mask)
        return FastSpeechOutput(mel, mel_before, mel_lengths, log_durations, durations)

    @staticmethod
    def predict_durations(log_durations: Tensor, mask: Tensor, speed: float = 1.0) -> Tensor:
        if speed <= 0:
            raise ValueError("speed must be positive")
        frames = (torch.expm1(log_durations.float()).clamp_min(0.0) / speed).round().long()
        return frames.clamp_min(1).masked_fill(~mask, 0)

    def loss(self, tokens: Tensor, durations: Tensor, mel: Tensor, mel_lengths: Tensor,
             speakers: Tensor | None = None) -> dict[str, Tensor]:
        """mel (B, T, n_mels) normalised targets; durations (B, S) sum to mel_lengths;
        speakers (B,) or None."""
        out = self(tokens, durations, speakers=speakers)
        mask = lengths_to_mask(mel_lengths, mel.size(1))[..., None]
        n = mask.sum() * mel.size(-1)
        mel_loss = ((out.mel_before - mel).abs() * mask).sum() / n
        post_loss = ((out.mel - mel).abs() * mask).sum() / n
        token_mask = tokens != self.dims.pad
        target = torch.log1p(durations.float())
        duration_loss = F.mse_loss(out.log_durations[token_mask], target[token_mask])
        total = mel_loss + post_loss + duration_loss
        return {"loss": total, "mel": mel_loss, "postnet": post_loss, "duration": duration_loss}
