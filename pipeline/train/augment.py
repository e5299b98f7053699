"""Waveform-domain augmentation of ASR training audio, drawn afresh for every utterance read.

The corpus voices are synthetic: digitally clean, full band, with fixed pauses at either end,
each at one pitch and one vocal tract. People are recorded in rooms, on telephones, beside other
talkers, at levels that clip, and clipped to the word by whoever cut the file. Each part below
imitates one of those and is off at its default:

    augment = WaveAugment(speed=0.15, reverb_share=0.3, noise_share=0.5, telephone_share=0.2)
    wav = augment(wav, 16_000, rng, others=[...])     # (N,) -> (M,), peak-normalised

- `trim_share`: leading and trailing silence cut to 0-`trim_keep_seconds`, so onsets are heard
  without a pause before them (real clips are often trimmed to the word).
- `speed`: Ko et al. 2015's speed perturbation, a resampling: pitch, formants and length change
  by one factor (the recipe's log-mel tempo and VTLP then vary length and formants apart).
- `pitch`: a pitch shift of up to this many semitones at the length kept (a phase vocoder's
  stretch, then a resampling: the formants move with the pitch; VTLP moves them alone).
- `reverb_share`: convolution with a generated room impulse response (a direct path, sparse early
  reflections, and a tail of noise decaying by 60 dB in an RT60 drawn from `rt60`).
- `noise_share`: additive noise at an SNR drawn from `snr`: coloured noise, or, for a
  `babble_share` of them, babble of other utterances (`others`) summed at random offsets.
- `telephone_share`: a telephone channel: 300-3400 Hz at 8 kHz through a codec drawn from
  `TELEPHONE_CODECS`: G.711 mu-law or A-law, GSM 06.10 full rate (13 kbit/s, mobile) or G.721
  ADPCM (32 kbit/s), coded and decoded by libsndfile, and back at the input's rate.
- `gain_db` and `clip_share`: a random gain, and clipping at a random fraction of the peak.

The result is peak-normalised as `pipeline.frontend.audio.load_audio` normalises every input at
inference. Impulse responses are generated here rather than simulated with an image-source
library (pyroomacoustics): the recogniser needs the decay and colouring of rooms, not their
geometry, and a generated response costs one FFT convolution and no compiled dependency.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

TELEPHONE_RATE = 8_000
TELEPHONE_BAND = (300.0, 3400.0)  # Hz, the ITU-T voice channel
# codec -> libsndfile's WAV subtype that codes it
TELEPHONE_CODECS = {"ulaw": "ULAW", "alaw": "ALAW", "gsm": "GSM610", "adpcm": "G721_32"}


@dataclass(frozen=True)
class WaveAugment:
    trim_share: float = 0.0  # utterances whose leading and trailing silence is cut
    trim_keep_seconds: float = 0.05  # at most this much silence left at either end
    speed: float = 0.0  # resampled to play at a speed within 1 +- this (0: off)
    pitch: float = 0.0  # pitch shifted by up to +- this many semitones, the length kept (0: off)
    reverb_share: float = 0.0
    rt60: tuple[float, float] = (0.15, 0.8)  # seconds
    noise_share: float = 0.0
    snr: tuple[float, float] = (5.0, 30.0)  # dB, signal power over noise power
    babble_share: float = 0.5  # of the noisy utterances, those whose noise is babble
    telephone_share: float = 0.0
    gain_db: float = 0.0  # random gain within +- this many dB (0: off)
    clip_share: float = 0.0  # utterances clipped at 30-90% of their peak

    def __post_init__(self) -> None:
        for name in ("trim_share", "reverb_share", "noise_share", "babble_share",
                     "telephone_share", "clip_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.speed < 0.5:
            raise ValueError(f"speed must be in [0, 0.5), got {self.speed}")
        if not 0.0 <= self.pitch <= 12.0:
            raise ValueError(f"pitch must be in [0, 12] semitones, got {self.pitch}")
        for name in ("rt60", "snr"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: low {low} is above high {high}")
        if self.rt60[0] <= 0:
            raise ValueError(f"rt60 must be positive, got {self.rt60}")

    @property
    def active(self) -> bool:
        return any((self.trim_share, self.speed, self.pitch, self.reverb_share, self.noise_share,
                    self.telephone_share, self.gain_db, self.clip_share))

    def __call__(self, wav: Tensor, rate: int, rng: random.Random,
                 others: Sequence[Tensor] = ()) -> Tensor:
        """(N,) waveform at `rate` -> (M,) augmented waveform; `others`: waveforms at the same
        rate (other utterances of the batch) that babble is made from."""
        if rng.random() < self.trim_share:
            wav = trim_silence(wav, rate, rng.uniform(0, self.trim_keep_seconds),
                               rng.uniform(0, self.trim_keep_seconds))
        if self.speed:
            wav = change_speed(wav, rng.uniform(1 - self.speed, 1 + self.speed))
        if self.pitch:
            wav = shift_pitch(wav, rate, rng.uniform(-self.pitch, self.pitch))
        if rng.random() < self.reverb_share:
            wav = reverberate(wav, room_impulse_response(rate, rng.uniform(*self.rt60), rng))
        if rng.random() < self.noise_share:
            if others and rng.random() < self.babble_share:
                noise = babble(others, wav.numel(), rng)
            else:
                noise = coloured_noise(wav.numel(), rng)
            wav = add_noise(wav, noise, rng.uniform(*self.snr))
        if rng.random() < self.telephone_share:
            wav = telephone(wav, rate, rng.choice(list(TELEPHONE_CODECS)))
        if self.gain_db:
            wav = wav * 10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20)
        if rng.random() < self.clip_share:
            level = rng.uniform(0.3, 0.9) * float(wav.abs().max())
            wav = wav.clamp(-level, level)
        return wav / wav.abs().max().clamp_min(1e-8) * 0.95


def trim_silence(wav: Tensor, rate: int, keep_before: float = 0.0, keep_after: float = 0.0,
                 threshold_db: float = 40.0) -> Tensor:
    """Cut leading and trailing samples outside the speech (10 ms frames within
    `threshold_db` of the loudest), keeping `keep_before` / `keep_after` seconds of them."""
    hop = max(1, rate // 100)
    frames = wav[: wav.numel() // hop * hop].view(-1, hop)
    if frames.size(0) == 0:
        return wav
    energy = frames.pow(2).mean(1)
    loud = (energy > energy.max() * 10 ** (-threshold_db / 10)).nonzero().squeeze(1)
    start = max(0, int(loud[0]) * hop - round(keep_before * rate))
    end = min(wav.numel(), (int(loud[-1]) + 1) * hop + round(keep_after * rate))
    return wav[start:end]


def change_speed(wav: Tensor, factor: float) -> Tensor:
    """Play `factor` times as fast at any sample rate: resampled, so length / factor and every
    frequency x factor."""
    if factor == 1.0:
        return wav
    # the rate ratio in small integers (a short resampling kernel): the factor to within 0.5%
    return AF.resample(wav, 200, round(200 / factor))


def shift_pitch(wav: Tensor, rate: int, semitones: float, n_fft: int = 512) -> Tensor:
    """`wav` with every frequency raised by `semitones` (lowered where negative) and its length
    kept: stretched by a phase vocoder to 2**(semitones / 12) times its length, then played that
    much faster (`change_speed`). torchaudio's `pitch_shift` does the same but resamples between
    rates whose ratio has large terms, a long kernel that costs seconds an utterance."""
    factor = 2 ** (semitones / 12)
    if abs(factor - 1) < 0.005 or wav.numel() < n_fft:
        return wav
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    spec = torch.stft(wav, n_fft, hop, window=window, return_complex=True)
    phase_advance = torch.linspace(0, math.pi * hop, spec.size(0))[:, None]
    stretched = AF.phase_vocoder(spec, 1 / factor, phase_advance)
    longer = torch.istft(stretched, n_fft, hop, window=window,
                         length=round(wav.numel() * factor))
    out = change_speed(longer, factor)
    if out.numel() < wav.numel():
        out = torch.nn.functional.pad(out, (0, wav.numel() - out.numel()))
    return out[: wav.numel()]


def room_impulse_response(rate: int, rt60: float, rng: random.Random) -> Tensor:
    """(L,) a room's impulse response: the direct path, a few early reflections in the first
    50 ms, and a noise tail whose power falls 60 dB in `rt60` seconds, slightly low-passed
    (walls absorb highs first). Normalised so the direct path is 1."""
    n = max(2, round(rate * min(rt60, 2.0)))
    t = torch.arange(n) / rate
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    decay = torch.exp(-3 * math.log(10) * t / rt60)  # amplitude: -60 dB in power at t = rt60
    rir = torch.randn(n, generator=gen) * decay * 0.3  # the tail
    rir = AF.lowpass_biquad(rir, rate, rng.uniform(2000, min(7000, rate / 2 - 100)))
    rir[0] = 1.0
    for _ in range(rng.randint(3, 8)):  # early reflections
        i = rng.randrange(max(2, round(0.002 * rate)), max(3, round(0.05 * rate)))
        if i < n:
            rir[i] += rng.uniform(-0.6, 0.6) * float(decay[i])
    return rir


def reverberate(wav: Tensor, rir: Tensor) -> Tensor:
    """`wav` heard in the room of `rir`, its length kept (the tail past the end is cut)."""
    return AF.fftconvolve(wav, rir)[: wav.numel()]


def coloured_noise(n: int, rng: random.Random) -> Tensor:
    """(n,) noise with a random spectral tilt, between white and brown."""
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    spectrum = torch.fft.rfft(torch.randn(n, generator=gen))
    f = torch.arange(1, spectrum.numel() + 1, dtype=torch.float32)
    tilt = rng.uniform(0.0, 1.0)  # power ~ 1 / f**tilt
    return torch.fft.irfft(spectrum / f ** (tilt / 2), n)


def babble(others: Sequence[Tensor], n: int, rng: random.Random, talkers: tuple[int, int] = (2, 5)) -> Tensor:
    """(n,) several other utterances at random offsets, summed at random levels: talk behind
    the talker."""
    out = torch.zeros(n)
    for _ in range(rng.randint(*talkers)):
        other = others[rng.randrange(len(others))]
        if other.numel() == 0:
            continue
        if other.numel() < n:
            other = other.repeat(n // other.numel() + 1)
        start = rng.randrange(other.numel() - n + 1)
        piece = other[start: start + n]
        out += piece / piece.pow(2).mean().sqrt().clamp_min(1e-8) * rng.uniform(0.5, 1.0)
    return out


def add_noise(wav: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """`wav` + `noise` scaled so that the mean power of `wav` over that of the noise is
    `snr_db` decibels."""
    signal = wav.pow(2).mean()
    scale = (signal / (noise.pow(2).mean().clamp_min(1e-12) * 10 ** (snr_db / 10))).sqrt()
    return wav + noise[: wav.numel()] * scale


def telephone(wav: Tensor, rate: int, codec: str | None = "ulaw") -> Tensor:
    """`wav` through a telephone channel: band-limited to 300-3400 Hz, sampled at 8 kHz, coded
    and decoded by `codec` (a key of TELEPHONE_CODECS; None: not coded), then back at `rate`."""
    if codec is not None and codec not in TELEPHONE_CODECS:
        raise ValueError(f"codec must be one of {', '.join(TELEPHONE_CODECS)}, not {codec!r}")
    narrow = AF.resample(wav, rate, TELEPHONE_RATE) if rate != TELEPHONE_RATE else wav
    low, high = TELEPHONE_BAND
    narrow = AF.lowpass_biquad(AF.highpass_biquad(narrow, TELEPHONE_RATE, low), TELEPHONE_RATE, high)
    if codec is not None:
        peak = narrow.abs().max().clamp_min(1e-8)
        buffer = io.BytesIO()
        sf.write(buffer, (narrow / peak * 0.9).numpy(), TELEPHONE_RATE, format="WAV",
                 subtype=TELEPHONE_CODECS[codec])
        buffer.seek(0)
        decoded, _ = sf.read(buffer, dtype="float32")
        # GSM codes whole 20 ms frames: the last one comes back padded
        narrow = torch.from_numpy(decoded[: narrow.numel()]) * (peak / 0.9)
    return AF.resample(narrow, TELEPHONE_RATE, rate) if rate != TELEPHONE_RATE else narrow
