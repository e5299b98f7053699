"""Energy-based splitting of long audio at pauses, so each piece fits the recogniser.

Cuts go where the short-time energy is lowest inside each allowed window, so a cut falls in a
pause when there is one and never leaves a piece longer than `max_seconds`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def frame_energy_db(wav: Tensor, frame: int, hop: int) -> Tensor:
    """(N,) waveform -> (F,) frame energies in dB."""
    if wav.numel() < frame:
        wav = torch.nn.functional.pad(wav, (0, frame - wav.numel()))
    frames = wav.unfold(0, frame, hop)  # (F, frame)
    return 10 * torch.log10(frames.pow(2).mean(-1).clamp_min(1e-10))


def split_on_pauses(
    wav: Tensor, sample_rate: int, max_seconds: float = 20.0, min_seconds: float = 5.0,
    pause_seconds: float = 0.2,
) -> list[tuple[int, int]]:
    """Split points for `wav` (N,): a list of (start, end) sample ranges covering it in order.

    Each range is at most `max_seconds` long; inside the window [start + min_seconds,
    start + max_seconds] the cut goes to the middle of the quietest `pause_seconds` stretch.
    """
    if max_seconds <= min_seconds:
        raise ValueError("max_seconds must exceed min_seconds")
    n = wav.numel()
    max_len = int(max_seconds * sample_rate)
    if n <= max_len:
        return [(0, n)]
    hop = sample_rate // 100  # 10 ms frames
    energy = frame_energy_db(wav, 2 * hop, hop)
    width = max(1, int(pause_seconds * 100))
    # mean energy over a pause-long window centred on each frame
    smoothed = torch.nn.functional.avg_pool1d(energy[None, None], width, 1, padding=width // 2,
                                              count_include_pad=False)[0, 0][: energy.numel()]
    ranges, start = [], 0
    while n - start > max_len:
        lo = (start + int(min_seconds * sample_rate)) // hop
        hi = min((start + max_len) // hop, smoothed.numel())
        cut = (lo + int(smoothed[lo:hi].argmin())) * hop if hi > lo else start + max_len
        ranges.append((start, cut))
        start = cut
    ranges.append((start, n))
    return ranges


def end_padding(wav: Tensor, sample_rate: int, seconds: float, speech_db: float = 40.0,
                pause_db: float = 30.0) -> Tensor:
    """What to append to `wav` (N,) so that it ends in a pause: nothing when it already does
    (its last 50 ms lie more than `speech_db` below its loudest 20 ms frame); otherwise `seconds`
    of its own quietest stretch where that is a pause (`pause_db` below the peak: the clip's
    background, a noise floor included), or of silence where the clip has no pause."""
    hop = sample_rate // 100  # 10 ms frames
    energy = frame_energy_db(wav, 2 * hop, hop)
    peak = energy.max()
    if energy[-5:].max() < peak - speech_db:
        return wav.new_zeros(0)
    n = int(seconds * sample_rate)
    width = max(1, n // hop)
    if n == 0 or energy.numel() <= width:
        return wav.new_zeros(n)
    level = torch.nn.functional.avg_pool1d(energy[None, None], width, 1)[0, 0]
    quietest = int(level.argmin())
    if level[quietest] > peak - pause_db:
        return wav.new_zeros(n)
    background = wav[quietest * hop: quietest * hop + n]
    return torch.nn.functional.pad(background, (0, n - background.numel()))
