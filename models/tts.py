"""Autoregressive Transformer-TTS (Li et al. 2019).

    tokens -> embedding -> conv prenet -> + alpha PE -> Transformer encoder -> memory
    previous frame -> prenet (dropout kept on) -> + alpha PE -> Transformer decoder (causal
        self-attention, cross-attention over the memory) -> r mel frames + r stop logits
    mel frames -> residual conv postnet

The decoder emits r frames per step (the reduction factor): fewer steps, and an attention
that must move at most a token or so per step, which is easier to learn. Training is teacher
forced, with a guided attention loss on the cross-attention and optional scheduled sampling.
Inference is batched and incremental (KV cache); each item stops on its own stop token or at
its length cap, and the cross-attention can be held monotonic for every variant: a window
around the last focus for `dot` and `location`, the hard alignment for `monotonic`.

`durations_from_attention` turns a teacher-forced alignment into per-token frame counts, the
targets of a non-autoregressive model (models.fastspeech) on corpora without segmentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import CROSS_ATTENTION
from models.decoding import stop_if
from models.fastspeech import Postnet
from models.losses import diagonal_score, focus_rate, guided_attention_loss
from models.transformer import (
    Decoder,
    DecoderState,
    Encoder,
    ScaledPositionalEncoding,
    lengths_to_mask,
)


@dataclass(frozen=True)
class TTSDims:
    vocab_size: int
    text_units: str = "phones"  # the pipeline's vocabulary: "phones" (flite) or "chars"
    n_mels: int = 80
    reduction: int = 2  # r: mel frames per decoder step
    # sized to train and run on a 2-core CPU (Li et al. use 512 wide, 6 + 6 layers, 8 heads)
    d_model: int = 192
    n_heads: int = 2
    d_ff: int = 768
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    dropout: float = 0.1
    cross_attention: str = "dot"  # dot | location | monotonic
    attention_options: dict = field(default_factory=dict)  # keyword arguments of the variant
    encoder_prenet_layers: int = 3
    encoder_prenet_kernel: int = 5
    decoder_prenet_dim: int = 192
    prenet_dropout: float = 0.5
    postnet_channels: int = 192
    postnet_layers: int = 5
    pad: int = 0

    def __post_init__(self) -> None:
        if self.text_units not in ("phones", "chars"):
            raise ValueError(f"text_units must be 'phones' or 'chars', not {self.text_units!r}")
        if self.cross_attention not in CROSS_ATTENTION:
            raise ValueError(f"unknown attention {self.cross_attention!r}; "
                             f"one of {sorted(CROSS_ATTENTION)}")
        if self.reduction < 1:
            raise ValueError("reduction must be >= 1")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TTSLossOptions:
    guided_weight: float = 1.0  # weight of the guided attention loss; 0 turns it off
    guided_sigma: float = 0.2  # g: width of the diagonal band, as a fraction of both lengths
    guided_layers: tuple[int, ...] | None = None  # decoder layers to guide; None = all
    guided_heads: tuple[int, ...] | None = None  # heads to guide in those layers; None = all
    stop_pos_weight: float = 5.0  # one positive frame (the last) against hundreds of negatives

    def __post_init__(self) -> None:
        if self.guided_weight < 0 or self.guided_sigma <= 0 or self.stop_pos_weight <= 0:
            raise ValueError("guided_weight must be >= 0, guided_sigma and stop_pos_weight > 0")


@dataclass(frozen=True)
class SynthesisOptions:
    stop_threshold: float = 0.5  # an item stops at its first frame with a stop probability above
    max_len_ratio: float = 10.0  # at most this many frames per input token, then `hit_length_cap`
    # ... plus this many: a short input is mostly its leading and trailing pauses ("A." is three
    # phones but flite speaks it in ~38 frames)
    max_len_offset: int = 40
    min_len_ratio: float = 0.0  # no stop before this many frames per input token
    monotonic: bool = True  # hold the cross-attention of every layer monotonic
    window: tuple[int, int] = (1, 2)  # (back, ahead) tokens around the last focus (dot, location)
    # with the window: frames one token may hold the focus before it must move on (None: no
    # bound). 40 frames (0.64 s at hop 256, 16 kHz) is about twice flite slt's longest phone.
    # Also, with `monotonic`, an item whose attention has held the last input token this long
    # has said everything and ends there, even if its stop token never fires.
    max_dwell_frames: int | None = 40
    # with `monotonic` and monotonic attention: the stop token counts only once the focus is
    # within this many tokens of the last one (an earlier stop would drop the end of the text)
    stop_within_tokens: int = 3
    prenet_dropout: bool = True  # as in training (Tacotron); False gives deterministic output

    def __post_init__(self) -> None:
        if not 0 < self.stop_threshold < 1:
            raise ValueError("stop_threshold must be in (0, 1)")
        if self.max_len_ratio <= 0 or not 0 <= self.min_len_ratio < self.max_len_ratio:
            raise ValueError("need max_len_ratio > 0 and 0 <= min_len_ratio < max_len_ratio")
        if self.max_len_offset < 0:
            raise ValueError("max_len_offset must be >= 0")
        if len(self.window) != 2 or min(self.window) < 0 or self.window[1] < 1:
            raise ValueError("window must be (back >= 0, ahead >= 1)")
        if self.max_dwell_frames is not None and self.max_dwell_frames < 1:
            raise ValueError("max_dwell_frames must be >= 1 (or None)")
        if self.stop_within_tokens < 1:
            raise ValueError("stop_within_tokens must be >= 1")

    def step_limits(self, in_lengths: Tensor, reduction: int) -> tuple[Tensor, Tensor]:
        """(B,) input lengths -> (B,) minimum and maximum decoder steps."""
        frames = in_lengths.float()
        min_steps = torch.floor(frames * self.min_len_ratio / reduction).long()
        max_frames = frames * self.max_len_ratio + self.max_len_offset
        max_steps = torch.ceil(max_frames / reduction).long().clamp_min(1)
        return min_steps, max_steps


@dataclass
class DecodedSteps:
    mel: Tensor  # (B, T * r, n_mels) before the postnet
    stop_logits: Tensor  # (B, T * r)
    weights: list[Tensor]  # per decoder layer (B, H, T, S)
    state: DecoderState


@dataclass
class TTSOutput:
    mel: Tensor  # (B, T', n_mels) after the postnet, T' = steps * r, zero past each length
    mel_before: Tensor  # (B, T', n_mels)
    stop_logits: Tensor  # (B, T')
    weights: list[Tensor]  # per decoder layer (B, H, steps, S)
    memory_mask: Tensor  # (B, S)


@dataclass
class GeneratedMel:
    mel: Tensor  # (T, n_mels) normalised log-mel after the postnet
    weights: Tensor  # (L, H, steps, S) cross-attention of every layer and head
    hit_length_cap: bool  # stopped by the cap, not by the stop token
    focus_rate: float  # of the most diagonal head


class EncoderPrenet(nn.Module):
    """Convolutions over embedded text (Tacotron 2), then a linear projection whose output
    range the positional encoding's trainable scale can match (Li et al. 2019)."""

    def __init__(self, d_model: int, layers: int, kernel: int, dropout: float):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2) for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, S, D), mask (B, S) True = valid -> (B, S, D); padding never leaks in."""
        for conv, norm in zip(self.convs, self.norms):
            x = x.masked_fill(~mask[..., None], 0.0)
            h = conv(x.transpose(1, 2)).transpose(1, 2)  # (B, S, D) -> (B, D, S) -> (B, S, D)
            x = self.drop(torch.relu(norm(h)))
        return self.proj(x)


class DecoderPrenet(nn.Module):
    """Two ReLU layers with dropout that stays on at inference (Tacotron): a bottleneck that
    keeps the decoder from copying the previous frame instead of attending to the text."""

    def __init__(self, n_mels: int, dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(n_mels, dim), nn.Linear(dim, dim)])
        self.p = dropout

    def forward(self, frames: Tensor, dropout: bool = True) -> Tensor:
        """frames (B, T, n_mels) -> (B, T, dim)."""
        x = frames
        for layer in self.layers:
            x = F.dropout(torch.relu(layer(x)), self.p, training=dropout)
        return x


class _StopTracker:
    """Per-item stopping of a batched decode: the first frame past the stop threshold, the
    attention having held the last input token for `end_steps` steps (when given), or the
    length cap. Items that are done keep being decoded (their rows are simply unused).

    With `end_tokens` (hard monotonic attention), the stop token only counts once the focus
    (the argmax of the attention averaged over layers and heads) is within `end_tokens` of the
    last input token: a decode that stops earlier drops the rest of the text, and a hard
    alignment always gets there. (A windowed soft alignment need not, so `dot` and `location`
    go without.)
    """

    def __init__(self, min_steps: Tensor, max_steps: Tensor, threshold: float, reduction: int,
                 end_steps: int | None = None, in_lengths: Tensor | None = None,
                 end_tokens: int | None = None):
        self.min_steps, self.max_steps = min_steps, max_steps
        self.threshold, self.r, self.end_steps = threshold, reduction, end_steps
        self.end_tokens = end_tokens
        self.last = None if in_lengths is None else in_lengths - 1  # (B,) last input token
        self.lengths = torch.zeros_like(max_steps)  # frames
        self.done = torch.zeros_like(max_steps, dtype=torch.bool)
        self.hit_cap = torch.zeros_like(self.done)
        self.at_end = torch.zeros_like(max_steps)  # consecutive steps on the last token

    def update(self, step: int, stop_logits: Tensor, weights: Tensor) -> bool:
        """stop_logits (B, r) and cross-attention weights (B, L, H, 1, S) of decoder step
        `step`; True once every item is done."""
        fired = (torch.sigmoid(stop_logits) > self.threshold) & (step >= self.min_steps)[:, None]
        if self.end_tokens is not None:
            focus = weights[..., 0, :].mean(dim=(1, 2)).argmax(dim=-1)  # (B,)
            fired &= (focus > self.last - self.end_tokens)[:, None]
        if self.end_steps is not None:  # attention on the last token, mean over layers and heads
            last = self.last[:, None, None, None].expand(-1, *weights.shape[1:3], 1)  # (B, L, H, 1)
            on_last = weights[..., 0, :].gather(-1, last)
            self.at_end = torch.where(on_last.mean(dim=(1, 2, 3)) > 0.5, self.at_end + 1, 0)
            said_all = (self.at_end >= self.end_steps) & (step >= self.min_steps)
            fired[:, -1] |= said_all  # ends with this step's last frame
        stopped = fired.any(dim=1) & ~self.done
        capped = ~self.done & ~stopped & (step + 1 >= self.max_steps)
        first = fired.int().argmax(dim=1)  # the first frame of the step past the threshold
        self.lengths = torch.where(stopped, step * self.r + first + 1, self.lengths)
        cap_length = torch.full_like(self.lengths, (step + 1) * self.r)
        self.lengths = torch.where(capped, cap_length, self.lengths)
        self.hit_cap |= capped
        self.done |= stopped | capped
        return bool(self.done.all())


class TransformerTTS(nn.Module):
    def __init__(self, dims: TTSDims):
        super().__init__()
        self.dims = dims
        D = dims.d_model
        self.embed = nn.Embedding(dims.vocab_size, D, padding_idx=dims.pad)
        self.encoder_prenet = EncoderPrenet(D, dims.encoder_prenet_layers,
                                            dims.encoder_prenet_kernel, dims.dropout)
        self.encoder_pos = ScaledPositionalEncoding(D, dropout=dims.dropout)
        self.encoder = Encoder(D, dims.n_heads, dims.d_ff, dims.n_encoder_layers, dims.dropout)
        self.decoder_prenet = DecoderPrenet(dims.n_mels, dims.decoder_prenet_dim,
                                            dims.prenet_dropout)
        self.decoder_proj = nn.Linear(dims.decoder_prenet_dim, D)
        self.decoder_pos = ScaledPositionalEncoding(D, dropout=dims.dropout)
        self.decoder = Decoder(D, dims.n_heads, dims.d_ff, dims.n_decoder_layers, dims.dropout,
                               dims.cross_attention, dict(dims.attention_options))
        self.mel_out = nn.Linear(D, dims.n_mels * dims.reduction)
        self.stop_out = nn.Linear(D, dims.reduction)
        self.postnet = Postnet(dims.n_mels, dims.postnet_channels, dims.postnet_layers,
                               dropout=dims.dropout)

    # ------------------------------------------------------------------ the two stacks

    def encode(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """tokens (B, S) padded with `pad` -> memory (B, S, D), mask (B, S) True = valid."""
        mask = tokens != self.dims.pad
        x = self.encoder_prenet(self.embed(tokens), mask)
        return self.encoder(self.encoder_pos(x), mask), mask

    def decode(self, frames_in: Tensor, memory: Tensor, memory_mask: Tensor,
               state: DecoderState | None = None, prenet_dropout: bool = True) -> DecodedSteps:
        """Decode T steps after the `state.offset` already decoded.

        Args:
            frames_in: (B, T, n_mels) each step's input, the last frame of the step before
                (zeros, the "go" frame, at step 0).
            memory: (B, S, D); memory_mask: (B, S).
        """
        state = state or self.decoder.init_state(memory, memory_mask)
        x = self.decoder_proj(self.decoder_prenet(frames_in, prenet_dropout))
        x = self.decoder_pos(x, state.offset)
        h, weights, state = self.decoder(x, memory, memory_mask, state)
        B, T, _ = h.size()
        r, M = self.dims.reduction, self.dims.n_mels
        mel = self.mel_out(h).view(B, T * r, M)  # (B, T, r*M) -> (B, T*r, M)
        stop = self.stop_out(h).view(B, T * r)
        return DecodedSteps(mel, stop, weights, state)

    def teacher_inputs(self, mel: Tensor) -> Tensor:
        """mel (B, T, n_mels) targets -> (B, ceil(T / r), n_mels) teacher-forced step inputs."""
        B, T, M = mel.size()
        r = self.dims.reduction
        steps = -(-T // r)
        last = F.pad(mel, (0, 0, 0, steps * r - T))[:, r - 1:: r]  # (B, steps, M): last frames
        return torch.cat([mel.new_zeros(B, 1, M), last[:, :-1]], dim=1)

    def forward(self, tokens: Tensor, mel: Tensor, mel_lengths: Tensor,
                frames_in: Tensor | None = None, prenet_dropout: bool = True) -> TTSOutput:
        """Teacher forcing: tokens (B, S), mel (B, T, n_mels) targets, mel_lengths (B,);
        `frames_in` replaces the teacher-forced step inputs (scheduled sampling)."""
        memory, mask = self.encode(tokens)
        frames_in = self.teacher_inputs(mel) if frames_in is None else frames_in
        out = self.decode(frames_in, memory, mask, prenet_dropout=prenet_dropout)
        frame_mask = lengths_to_mask(mel_lengths, out.mel.size(1))
        mel_before = out.mel.masked_fill(~frame_mask[..., None], 0.0)
        mel = self.postnet(mel_before, frame_mask)
        return TTSOutput(mel, mel_before, out.stop_logits, out.weights, mask)

    # ------------------------------------------------------------------ training

    def loss(self, tokens: Tensor, mel: Tensor, mel_lengths: Tensor,
             options: TTSLossOptions = TTSLossOptions(),
             sampling_p: float = 0.0) -> dict[str, Tensor]:
        """mel (B, T, n_mels) normalised targets, mel_lengths (B,); `sampling_p` > 0 feeds back
        the model's own predictions at that rate (scheduled sampling)."""
        frames_in = self.teacher_inputs(mel)
        if sampling_p > 0:
            frames_in = self._scheduled_inputs(tokens, mel, mel_lengths, frames_in, sampling_p)
        return self.losses(self(tokens, mel, mel_lengths, frames_in), mel, mel_lengths, options)

    def losses(self, out: TTSOutput, mel: Tensor, mel_lengths: Tensor,
               options: TTSLossOptions = TTSLossOptions()) -> dict[str, Tensor]:
        """The losses of a teacher-forced `out` against mel (B, T, n_mels), mel_lengths (B,)."""
        T = out.mel.size(1)
        target = F.pad(mel, (0, 0, 0, T - mel.size(1)))
        frame_mask = lengths_to_mask(mel_lengths, T)
        n = frame_mask.sum() * mel.size(-1)
        mel_loss = ((out.mel_before - target).abs() * frame_mask[..., None]).sum() / n
        post_loss = ((out.mel - target).abs() * frame_mask[..., None]).sum() / n
        frames = torch.arange(T, device=mel.device)[None, :]
        stop_target = (frames == mel_lengths[:, None] - 1).float()  # the last frame only
        stop_loss = F.binary_cross_entropy_with_logits(
            out.stop_logits[frame_mask].float(), stop_target[frame_mask],
            pos_weight=torch.tensor(options.stop_pos_weight, device=mel.device),
        )
        losses = {"mel": mel_loss, "postnet": post_loss, "stop": stop_loss}
        total = mel_loss + post_loss + stop_loss
        if options.guided_weight > 0:
            steps = -(-mel_lengths // self.dims.reduction)
            weights = self._guided_weights(out.weights, options)
            losses["guided"] = guided_attention_loss(weights, out.memory_mask.sum(1), steps,
                                                     options.guided_sigma)
            total = total + options.guided_weight * losses["guided"]
        return {"loss": total, **losses}

    @staticmethod
    def _guided_weights(weights: list[Tensor], options: TTSLossOptions) -> Tensor:
        """The chosen heads of the chosen layers, concatenated: (B, L' * H', T, S)."""
        layers = range(len(weights)) if options.guided_layers is None else options.guided_layers
        heads = slice(None) if options.guided_heads is None else list(options.guided_heads)
        chosen = [weights[i][:, heads] for i in layers]
        return torch.cat(chosen, dim=1)

    def _scheduled_inputs(self, tokens: Tensor, mel: Tensor, mel_lengths: Tensor,
                          teacher_in: Tensor, p: float) -> Tensor:
        """Two-pass scheduled sampling: a teacher-forced pass predicts every frame, then each
        step's input is that prediction instead of the ground truth with probability p."""
        with torch.no_grad():
            predicted = self(tokens, mel, mel_lengths, teacher_in).mel_before
        own = self.teacher_inputs(predicted)[:, : teacher_in.size(1)]
        use_own = torch.rand(own.shape[:2], device=own.device) < p  # (B, steps)
        use_own[:, 0] = False  # the go frame is no prediction
        return torch.where(use_own[..., None], own.to(teacher_in.dtype), teacher_in)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def generate(self, tokens: Tensor, options: SynthesisOptions = SynthesisOptions(),
                 should_stop: Callable[[], bool] | None = None) -> list[GeneratedMel]:
        """Batched incremental synthesis: tokens (B, S) padded with `pad` -> one result per item.
        `should_stop` is asked before every step; True abandons the call with
        `models.decoding.Stopped`."""
        memory, mask = self.encode(tokens)
        in_lengths = mask.sum(dim=1)
        r = self.dims.reduction
        max_dwell = None if options.max_dwell_frames is None else -(-options.max_dwell_frames // r)
        hard = options.monotonic and self.dims.cross_attention == "monotonic"
        tracker = _StopTracker(*options.step_limits(in_lengths, r), options.stop_threshold, r,
                               max_dwell if options.monotonic else None, in_lengths,
                               options.stop_within_tokens if hard else None)
        state = self.decoder.init_state(memory, mask, options.window if options.monotonic else None,
                                        max_dwell)
        frame = memory.new_zeros(tokens.size(0), 1, self.dims.n_mels)  # the go frame
        mels, weights = [], []
        for step in range(int(tracker.max_steps.max())):
            stop_if(should_stop)
            out = self.decode(frame, memory, mask, state, options.prenet_dropout)
            state = out.state
            mels.append(out.mel)
            weights.append(torch.stack(out.weights, dim=1))  # (B, L, H, 1, S)
            if tracker.update(step, out.stop_logits, weights[-1]):
                break
            frame = out.mel[:, -1:]
        return self._finish(torch.cat(mels, dim=1), torch.cat(weights, dim=3), in_lengths, tracker)

    def _finish(self, mel_before: Tensor, weights: Tensor, in_lengths: Tensor,
                tracker: _StopTracker) -> list[GeneratedMel]:
        """mel_before (B, T, M), weights (B, L, H, steps, S) -> per item, trimmed results."""
        lengths = tracker.lengths
        frame_mask = lengths_to_mask(lengths, mel_before.size(1))
        mel = self.postnet(mel_before.masked_fill(~frame_mask[..., None], 0.0), frame_mask)
        steps = -(-lengths // self.dims.reduction)
        results = []
        for b in range(mel.size(0)):
            w = weights[b, :, :, : steps[b], : in_lengths[b]]  # (L, H, T_b, S_b)
            heads = w.flatten(0, 1)[None]  # (1, L*H, T_b, S_b)
            best = diagonal_score(heads, in_lengths[b, None], steps[b, None])[0].argmax()
            focus = focus_rate(heads, steps[b, None])[0, best]
            hit_cap = bool(tracker.hit_cap[b])
            results.append(GeneratedMel(mel[b, : lengths[b]], w, hit_cap, float(focus)))
        return results


# ---------------------------------------------------------------------- durations


def monotonic_alignment(log_probs: Tensor, in_lengths: Tensor, out_lengths: Tensor) -> Tensor:
    """The monotonic path with the largest summed log-probability (Glow-TTS's search): it
    starts at input 0, ends at the last input, and each frame stays or advances by one.

    Args:
        log_probs: (B, T, S) per frame and input; in_lengths, out_lengths: (B,) valid S and T.
    Returns:
        (B, T) long: the input of each frame, -1 past out_lengths.
    """
    B, T, S = log_probs.size()
    if (out_lengths < in_lengths).any():
        raise ValueError("every input needs a frame: out_lengths must be >= in_lengths")
    neg = -1e9  # finite: unreachable states must stay comparable, never NaN
    valid = torch.arange(S, device=log_probs.device)[None, :] < in_lengths[:, None]  # (B, S)
    lp = log_probs.float().masked_fill(~valid[:, None, :], neg)
    score = torch.full((B, S), neg, device=lp.device)
    score[:, 0] = lp[:, 0, 0]
    advanced = torch.zeros(B, T, S, dtype=torch.bool, device=lp.device)  # came from input s - 1
    for t in range(1, T):
        from_prev = F.pad(score[:, :-1], (1, 0), value=neg)
        advanced[:, t] = from_prev > score
        new = torch.maximum(from_prev, score) + lp[:, t]
        score = torch.where((t < out_lengths)[:, None], new, score)
    path = torch.full((B, T), -1, dtype=torch.long, device=lp.device)
    s = in_lengths - 1
    rows = torch.arange(B, device=lp.device)
    for t in range(T - 1, -1, -1):
        active = t < out_lengths
        path[:, t] = torch.where(active, s, path[:, t])
        s = torch.where(active & advanced[rows, t, s.clamp_min(0)], s - 1, s)
    return path


def durations_from_attention(weights: Tensor, in_lengths: Tensor, out_lengths: Tensor,
                             r: int = 1) -> Tensor:
    """Frames per input token from a teacher-forced cross-attention alignment.

    The most diagonal head of each item is upsampled from decoder steps to frames (linear
    interpolation, so a token boundary may fall inside a step) and the monotonic path through
    it is counted per token (FastSpeech takes the argmax; the path cannot go backwards or skip).

    Args:
        weights: (B, H, T, S) candidate heads (concatenate layers along H), T steps of r frames.
        in_lengths: (B,) valid inputs S; out_lengths: (B,) valid output frames.
    Returns:
        (B, S) long: >= 1 frame per valid input, 0 at padding; each row sums to out_lengths.
    """
    B, H, T, S = weights.size()
    steps = -(-out_lengths // r)
    best = diagonal_score(weights, in_lengths, steps).argmax(dim=1)  # (B,)
    align = weights[torch.arange(B, device=weights.device), best].float()  # (B, T, S)
    if r > 1:
        align = align.transpose(1, 2)  # (B, T, S) -> (B, S, T)
        align = F.interpolate(align, scale_factor=r, mode="linear", align_corners=False)
        align = align.transpose(1, 2)  # (B, S, T*r) -> (B, T*r, S)
    path = monotonic_alignment(align.clamp_min(1e-8).log(), in_lengths, out_lengths)
    durations = torch.zeros(B, S + 1, dtype=torch.long, device=weights.device)
    durations.scatter_add_(1, path.masked_fill(path < 0, S), torch.ones_like(path))
    return durations[:, :S]
