"""Attention-alignment losses and scores for sequence-to-sequence speech models.

Guided attention (Tachibana et al. 2017) penalises attention far from the diagonal of the
(output step, input token) plane. Text and speech run through each other in order at a roughly
constant rate, so a soft diagonal prior lets a TTS model find its alignment in a few hundred
steps instead of thousands, and keeps it from collapsing onto one token.
"""

from __future__ import annotations

import torch
from torch import Tensor


def guided_attention_penalty(in_lengths: Tensor, out_lengths: Tensor, g: float = 0.2) -> Tensor:
    """W(t, n) = 1 - exp(-(n/N - t/T)^2 / (2 g^2)), per item, zero outside the valid region.

    Positions are taken at cell centres, (n + 0.5) / N, so that an exact diagonal costs
    (almost) nothing at either end.

    Args:
        in_lengths: (B,) input tokens N; out_lengths: (B,) output steps T.
    Returns:
        (B, T_max, N_max) penalties in [0, 1).
    """
    if g <= 0:
        raise ValueError("g must be positive")
    device = in_lengths.device
    n = torch.arange(int(in_lengths.max()), device=device)[None, None, :]
    t = torch.arange(int(out_lengths.max()), device=device)[None, :, None]
    N = in_lengths.float()[:, None, None]
    T = out_lengths.float()[:, None, None]
    penalty = 1.0 - torch.exp(-(((n + 0.5) / N - (t + 0.5) / T) ** 2) / (2 * g * g))
    valid = (n < N) & (t < T)
    return penalty * valid


def diagonal_score(weights: Tensor, in_lengths: Tensor, out_lengths: Tensor,
                   g: float = 0.2) -> Tensor:
    """How diagonal each head's alignment is: 1 - its expected guided-attention penalty per step.

    1 for an alignment on the diagonal, near 0 for one on the anti-diagonal.

    Args:
        weights: (B, H, T, N) attention weights (or (B, T, N) for one head), rows sum to 1.
        in_lengths: (B,) valid inputs; out_lengths: (B,) valid output steps.
    Returns:
        (B, H) scores (or (B,)).
    """
    one_head = weights.dim() == 3
    if one_head:
        weights = weights[:, None]
    B, H, T, N = weights.size()
    penalty = guided_attention_penalty(in_lengths, out_lengths, g)[:, None, :T, :N]  # (B, 1, T, N)
    per_step = (weights.float() * penalty).sum(dim=-1)  # (B, H, T)
    score = 1.0 - per_step.sum(dim=-1) / out_lengths.clamp_min(1).float()[:, None]
    return score[:, 0] if one_head else score


def guided_attention_loss(weights: Tensor, in_lengths: Tensor, out_lengths: Tensor,
                          g: float = 0.2) -> Tensor:
    """Mean guided-attention penalty per output step, over items and heads: 0 on the diagonal.

    Normalised per output step (the sum over inputs is an expectation under each row's
    weights), so its scale does not shrink with the input length as a mean over all cells
    would, and one weight fits short and long utterances.

    Args:
        weights: (B, H, T, N) or (B, T, N) attention weights of the heads to guide.
        in_lengths: (B,) valid inputs N; out_lengths: (B,) valid output steps T.
    Returns:
        scalar loss in [0, 1).
    """
    return (1.0 - diagonal_score(weights, in_lengths, out_lengths, g)).mean()


def focus_rate(weights: Tensor, out_lengths: Tensor) -> Tensor:
    """FastSpeech's focus rate: the mean over valid output steps of each step's largest weight.

    Args:
        weights: (B, H, T, N); out_lengths: (B,) valid output steps.
    Returns:
        (B, H) in (0, 1]; 1 when every step attends to a single input.
    """
    T = weights.size(2)
    valid = torch.arange(T, device=weights.device)[None, :] < out_lengths[:, None]  # (B, T)
    peaks = weights.float().amax(dim=-1) * valid[:, None, :]  # (B, H, T)
    return peaks.sum(dim=-1) / out_lengths.clamp_min(1).float()[:, None]
