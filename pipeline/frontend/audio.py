"""Audio input and output: loading, validation, resampling, atomic saving.

Everything a model sees passes through `load_audio`, which checks the file before any
model does and raises an `AudioError` subclass with a message a user can act on.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32


class AudioError(ValueError):
    """Base class of every audio input error; the message is meant for the user."""


class AudioNotFoundError(AudioError):
    pass


class EmptyAudioError(AudioError):
    pass


class CorruptAudioError(AudioError):
    pass


class SilentAudioError(AudioError):
    pass


class InvalidSamplesError(AudioError):
    """NaN or infinite samples."""


class AudioTooShortError(AudioError):
    pass


class AudioTooLongError(AudioError):
    pass


class UnsupportedFormatError(AudioError):
    """Absurd sample rate or channel count."""


class FormatMismatchError(CorruptAudioError):
    """The file's name says one format, its bytes another (an mp3 renamed .wav, say)."""


@dataclass(frozen=True)
class AudioLimits:
    """What `load_audio` accepts."""

    min_seconds: float = 0.1  # shorter clips carry no recognisable speech
    max_seconds: float = 30 * 60.0  # checked from the header before decoding where possible
    silence_peak: float = 1e-4  # peak amplitude below which a clip counts as silent

    def __post_init__(self) -> None:
        if not 0 <= self.min_seconds < self.max_seconds:
            raise ValueError("need 0 <= min_seconds < max_seconds")


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | os.PathLike) -> AudioInfo | None:
    """Header information without decoding, or None when soundfile cannot read the header."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    limits: AudioLimits = AudioLimits(),
    normalize: bool = True,
) -> torch.Tensor:
    """Read an audio file as a mono float32 waveform at `sample_rate`.

    wav/flac/ogg go through soundfile; what it cannot read (mp3, odd containers)
    through librosa. Raises an `AudioError` subclass for anything unusable.

    Returns:
        (N,) float32 waveform, peak-normalised to 0.95 when `normalize`.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise EmptyAudioError(f"{path}: the file is empty (0 bytes)")
    _check_container(path)
    info = probe(path)
    if info is not None:
        _check_header(path, info, limits)
    samples, file_rate = _decode(path, info)
    return _prepare(path, samples, file_rate, sample_rate, limits, normalize)


def decode_bytes(
    data: bytes, sample_rate: int, limits: AudioLimits = AudioLimits(), name: str = "<upload>"
) -> torch.Tensor:
    """`load_audio` for bytes already in memory (an HTTP upload, say)."""
    if not data:
        raise EmptyAudioError(f"{name}: the upload is empty (0 bytes)")
    with tempfile.NamedTemporaryFile(suffix=Path(name).suffix or ".bin") as f:
        f.write(data)
        f.flush()
        try:
            return load_audio(f.name, sample_rate, limits)
        except AudioError as e:  # name the upload, not our temporary file
            raise type(e)(str(e).replace(f.name, name)) from None


def sniff_format(head: bytes) -> str | None:
    """The container a file's first bytes announce: "wav", "flac", "ogg", "mp3", "aiff" or None."""
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    # an ID3 tag, or an MPEG audio frame sync (11 set bits) with layer bits != 00
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
                              and head[1] & 0x06):
        return "mp3"
    return None


_SUFFIX_FORMATS = {".wav": "wav", ".wave": "wav", ".flac": "flac", ".ogg": "ogg", ".oga": "ogg",
                   ".opus": "ogg", ".mp3": "mp3", ".aif": "aiff", ".aiff": "aiff"}


def _check_container(path: Path) -> None:
    """A file whose name and contents disagree is refused rather than guessed at."""
    named = _SUFFIX_FORMATS.get(path.suffix.lower())
    with path.open("rb") as f:
        actual = sniff_format(f.read(12))
    if named is not None and actual is not None and named != actual:
        raise FormatMismatchError(
            f"{path}: the name says {named.upper()} but the file holds {actual.upper()} data; "
            f"rename it to {path.stem}.{actual} or convert it"
        )


def _check_header(path: Path, info: AudioInfo, limits: AudioLimits) -> None:
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise UnsupportedFormatError(
            f"{path}: sample rate {info.sample_rate} Hz is outside "
            f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise UnsupportedFormatError(f"{path}: {info.channels} channels (1-{MAX_CHANNELS} accepted)")
    if info.frames == 0:
        raise EmptyAudioError(f"{path}: the file holds no audio samples")
    if info.duration > limits.max_seconds:
        raise AudioTooLongError(
            f"{path}: {info.duration:.1f} s is longer than the limit of {limits.max_seconds:.0f} s"
        )


def _decode(path: Path, info: AudioInfo | None) -> tuple[np.ndarray, int]:
    if info is not None:
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            return data.mean(axis=1), int(rate)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise CorruptAudioError(f"{path}: the audio data is damaged ({e})") from None
    # soundfile could not even read a header: mp3 or a non-audio file
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data, rate = librosa.load(str(path), sr=None, mono=True)
    except Exception:  # librosa and audioread raise a zoo of types here
        raise CorruptAudioError(
            f"{path}: not a readable audio file (wav, flac, ogg or mp3 expected)"
        ) from None
    return data.astype(np.float32), int(rate)


def _prepare(
    path: Path,
    samples: np.ndarray,
    file_rate: int,
    sample_rate: int,
    limits: AudioLimits,
    normalize: bool,
) -> torch.Tensor:
    if not MIN_SAMPLE_RATE <= file_rate <= MAX_SAMPLE_RATE:
        raise UnsupportedFormatError(f"{path}: sample rate {file_rate} Hz is not supported")
    if samples.size == 0:
        raise EmptyAudioError(f"{path}: the file holds no audio samples")
    if not np.isfinite(samples).all():
        raise InvalidSamplesError(f"{path}: the audio contains NaN or infinite samples")
    seconds = samples.size / file_rate
    if seconds < limits.min_seconds:
        raise AudioTooShortError(
            f"{path}: {seconds:.3f} s is shorter than the minimum of {limits.min_seconds} s"
        )
    if seconds > limits.max_seconds:
        raise AudioTooLongError(
            f"{path}: {seconds:.1f} s is longer than the limit of {limits.max_seconds:.0f} s"
        )
    peak = float(np.abs(samples).max())
    if peak < limits.silence_peak:
        raise SilentAudioError(f"{path}: the audio is silent (peak amplitude {peak:.1e})")
    wav = torch.from_numpy(np.ascontiguousarray(samples))
    if file_rate != sample_rate:
        wav = AF.resample(wav, file_rate, sample_rate)
    if normalize:
        wav = wav * (0.95 / max(peak, 1e-8))
    return wav


def save_wav(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int) -> Path:
    """Write 16-bit PCM atomically: readers never see a half-written file.

    Args:
        wav: (N,) float waveform in [-1, 1].
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wav.detach().float().cpu().clamp(-1.0, 1.0).numpy()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            sf.write(f, data, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def wav_bytes(wav: torch.Tensor, sample_rate: int) -> bytes:
    """A 16-bit PCM wav file's contents, for storing elsewhere than a local path.

    Args:
        wav: (N,) float waveform in [-1, 1].
    """
    buf = io.BytesIO()
    sf.write(buf, wav.detach().float().cpu().clamp(-1.0, 1.0).numpy(), sample_rate,
             subtype="PCM_16", format="WAV")
    return buf.getvalue()


def duration_seconds(path: str | os.PathLike) -> float:
    info = probe(path)
    if info is None:
        raise CorruptAudioError(f"{path}: cannot read the audio header")
    return info.duration
