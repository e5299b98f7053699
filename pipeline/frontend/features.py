"""Log-mel features (torchaudio), per-bin normalisation, and the Griffin-Lim vocoder.

One frozen `FeatureConfig` describes the features; every checkpoint stores it, so a model is
always fed what it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torchaudio
import torchaudio.transforms as T
from torch import Tensor, nn


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16_000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8_000.0
    power: float = 1.0  # 1: magnitude mel, 2: power mel
    log_floor: float = 1e-5  # log(max(mel, floor)): keeps silence finite

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError("win_length must be <= n_fft")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError("need 0 <= f_min < f_max <= sample_rate / 2")
        if self.power not in (1.0, 2.0):
            raise ValueError("power must be 1 or 2")

    def num_frames(self, num_samples: Tensor | int) -> Tensor | int:
        """Frames of a centred STFT over `num_samples` samples."""
        return num_samples // self.hop_length + 1

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sample_rate

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "FeatureConfig":
        return FeatureConfig(**d)


# TTS: 16 ms hop at 16 kHz, wide window for Griffin-Lim; ASR: the usual 25 ms / 10 ms
TTS_FEATURES = FeatureConfig()
ASR_FEATURES = FeatureConfig(n_fft=512, win_length=400, hop_length=160)


class LogMel(nn.Module):
    """Waveforms -> log-mel frames, batched, on whatever device the module is on."""

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self.config = config
        self.mel = T.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            f_min=config.f_min,
            f_max=config.f_max,
            n_mels=config.n_mels,
            power=config.power,
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav (B, N) or (N,), lengths (B,) in samples -> (B, T, n_mels) log-mel, (B,) frames."""
        if wav.dim() == 1:
            wav = wav[None]
        if lengths is None:
            lengths = torch.full((wav.size(0),), wav.size(1), dtype=torch.long, device=wav.device)
        mel = self.mel(wav.float())  # (B, n_mels, T)
        logmel = mel.clamp_min(self.config.log_floor).log().transpose(1, 2)  # -> (B, T, n_mels)
        return logmel, self.config.num_frames(lengths)


@dataclass
class FeatureStats:
    """Per-bin mean and standard deviation of log-mel frames over a training set."""

    mean: Tensor  # (n_mels,)
    std: Tensor  # (n_mels,)

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.std.to(x) + self.mean.to(x)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @staticmethod
    def from_dict(d: dict) -> "FeatureStats":
        return FeatureStats(torch.tensor(d["mean"]), torch.tensor(d["std"]))

    @staticmethod
    def accumulate(frames: list[Tensor]) -> "FeatureStats":
        """frames: list of (T_i, n_mels) log-mel tensors."""
        total = torch.cat([f.double() for f in frames])
        return FeatureStats(total.mean(0).float(), total.std(0).clamp_min(1e-3).float())


def stretch(x: Tensor, factor: float) -> Tensor:
    """The same frames at `factor` times the tempo, by linear interpolation in time:
    (T, F) -> (round(T / factor), F). Training's tempo perturbation, the recogniser's views."""
    new_len = max(2, round(x.size(0) / factor))
    return nn.functional.interpolate(x.T[None], size=new_len, mode="linear", align_corners=False)[0].T


class GriffinLim(nn.Module):
    """Log-mel -> waveform: invert the mel filterbank, then Griffin-Lim phase recovery.

    The mel inversion is the minimum-norm least-squares solution against torchaudio's
    filterbank, precomputed once as a pseudo-inverse (one matrix product per call, where
    InverseMelScale's solver runs per call), clamped to non-negative magnitudes. Griffin-Lim
    uses momentum 0.99 (Perraudin et al. 2013), which converges in a few dozen iterations, and
    starts from zero phase, so a mel always gives the same waveform and the global RNG is left
    alone.

    bench/griffin_lim.py chose the defaults: on flite slt speech this route matches librosa's
    NNLS inversion in PocketSphinx WER and spectral convergence at a third of its run time.
    Sharpening magnitudes (`power` > 1) raised spectral convergence (0.15 vs 0.11 at 1.2) with
    no WER gain on real mels; it may still help over-smoothed model mels (unmeasured).
    """

    def __init__(self, config: FeatureConfig, n_iter: int = 32, power: float = 1.0):
        super().__init__()
        self.config = config
        self.power = power  # magnitude ** power before phase recovery
        fb = torchaudio.functional.melscale_fbanks(
            config.n_fft // 2 + 1, config.f_min, config.f_max, config.n_mels, config.sample_rate,
            norm="slaney", mel_scale="slaney",
        )  # (n_stft, n_mels)
        self.register_buffer("inverse_fb", torch.linalg.pinv(fb.T.double()).float(), persistent=False)
        self.griffin_lim = T.GriffinLim(
            n_fft=config.n_fft, n_iter=n_iter, win_length=config.win_length,
            hop_length=config.hop_length, power=1.0, momentum=0.99, rand_init=False,
        )

    @torch.no_grad()
    def forward(self, logmel: Tensor) -> Tensor:
        """(T, n_mels) or (B, T, n_mels) log-mel -> (N,) or (B, N) waveform."""
        squeeze = logmel.dim() == 2
        mel = logmel.float().exp()
        if squeeze:
            mel = mel[None]
        if self.config.power == 2.0:
            mel = mel.sqrt()  # the inversion below works on magnitudes
        magnitude = self.inverse_fb @ mel.transpose(1, 2)  # (n_stft, n_mels) @ (B, n_mels, T)
        magnitude = magnitude.clamp_min(0.0) ** self.power  # (B, n_stft, T)
        wav = self.griffin_lim(magnitude)
        peak = wav.abs().amax(dim=-1, keepdim=True).clamp_min(1e-4)
        wav = wav * (0.95 / peak).clamp(max=1.0 / 1e-2)
        return wav[0] if squeeze else wav


class LibrosaGriffinLim(nn.Module):
    """Log-mel -> waveform through librosa: non-negative least-squares mel inversion
    (`librosa.feature.inverse.mel_to_stft`), then `librosa.griffinlim` (momentum 0.99).

    The same interface as `GriffinLim`; it runs on the CPU in numpy, one utterance at a time,
    and is seeded, so a mel always gives the same waveform.
    """

    def __init__(self, config: FeatureConfig, n_iter: int = 32, seed: int = 0):
        super().__init__()
        self.config = config
        self.n_iter = n_iter
        self.seed = seed

    @torch.no_grad()
    def forward(self, logmel: Tensor) -> Tensor:
        """(T, n_mels) or (B, T, n_mels) log-mel -> (N,) or (B, N) waveform."""
        if logmel.dim() == 3:
            return torch.stack([self(m) for m in logmel])
        import librosa

        c = self.config
        mel = logmel.detach().float().cpu().exp().T.numpy()  # (T, n_mels) -> (n_mels, T)
        magnitude = librosa.feature.inverse.mel_to_stft(
            mel, sr=c.sample_rate, n_fft=c.n_fft, power=c.power, fmin=c.f_min, fmax=c.f_max,
            norm="slaney", htk=False,
        )  # (n_stft, T) magnitudes
        wav = librosa.griffinlim(
            magnitude, n_iter=self.n_iter, hop_length=c.hop_length, win_length=c.win_length,
            n_fft=c.n_fft, momentum=0.99, random_state=self.seed,
        )
        wav = torch.from_numpy(wav).to(logmel.device)
        return wav * (0.95 / wav.abs().max().clamp_min(1e-4)).clamp(max=1.0 / 1e-2)


# Griffin-Lim routes by name; bench/griffin_lim.py measures them against each other
VOCODERS = {"torchaudio": GriffinLim, "librosa": LibrosaGriffinLim}
DEFAULT_VOCODER = "torchaudio"


def griffin_lim(config: FeatureConfig, n_iter: int = 32, route: str = DEFAULT_VOCODER) -> nn.Module:
    """The Griffin-Lim vocoder for `config`: log-mel (T, n_mels) -> waveform (N,)."""
    if route not in VOCODERS:
        raise ValueError(f"unknown Griffin-Lim route {route!r}; choose from {sorted(VOCODERS)}")
    return VOCODERS[route](config, n_iter=n_iter)
