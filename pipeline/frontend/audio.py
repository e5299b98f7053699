"""Audio input and output: loading, validation, resampling, atomic saving.

Everything a model sees passes through `load_audio`, which checks the file before any
model does and raises an `AudioError` subclass with a message a user can act on.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from pipeline.frontend.header import (  # noqa: F401  (the errors and limits are this module's API too)
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    AudioError,
    AudioInfo,
    AudioLimits,
    AudioNotFoundError,
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    CorruptAudioError,
    DecodeTimeoutError,
    EmptyAudioError,
    FormatMismatchError,
    InvalidSamplesError,
    SilentAudioError,
    UnsupportedFormatError,
    inspect_audio,
    probe,
    sniff_format,
    too_large,
    too_long,
)

BLOCK_FRAMES = 1 << 16  # frames decoded at a time: at most 32 channels x 64 Ki x 4 bytes = 8 MiB


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    limits: AudioLimits = AudioLimits(),
    normalize: bool = True,
) -> torch.Tensor:
    """Read an audio file as a mono float32 waveform at `sample_rate`.

    wav/flac/ogg/mp3/aiff through soundfile; anything else is refused. The header is checked
    first (`inspect_audio`); the decode then runs in blocks, each down-mixed as it arrives, so
    memory stays near the mono result however many channels the file has, and stops at the
    sample, duration and time limits whatever the header said. Raises an `AudioError` subclass
    for anything unusable.

    Returns:
        (N,) float32 waveform, peak-normalised to 0.95 when `normalize`.
    """
    path = Path(path)
    info = inspect_audio(path, limits)
    samples = _decode(path, info, limits)
    return _prepare(path, samples, info.sample_rate, sample_rate, limits, normalize)


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


def _decode(path: Path, info: AudioInfo, limits: AudioLimits) -> np.ndarray:
    """The mono down-mix at the file's rate, decoded block by block.

    The header's frame count is a claim, not a bound (a FLAC stream may hold more than its
    STREAMINFO says): the count of frames actually decoded is checked after every block.
    """
    deadline = time.monotonic() + limits.max_decode_seconds
    max_frames = min(limits.max_samples // info.channels,
                     int(limits.max_seconds * info.sample_rate) + 1)
    parts, frames = [], 0
    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)  # (n, C)
                if not len(block):
                    break
                frames += len(block)
                if frames > max_frames:
                    _refuse_overrun(path, info, frames, limits)
                parts.append(block.mean(axis=1))  # (n, C) -> (n,)
                if time.monotonic() > deadline:
                    raise DecodeTimeoutError(f"{path}: decoding took longer than the limit of "
                                             f"{limits.max_decode_seconds:g} s")
    except (sf.LibsndfileError, RuntimeError) as e:
        raise CorruptAudioError(f"{path}: the audio data is damaged ({e})") from None
    if not parts:
        return np.zeros(0, np.float32)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _refuse_overrun(path: Path, info: AudioInfo, frames: int, limits: AudioLimits) -> None:
    if frames > limits.max_seconds * info.sample_rate:
        raise AudioTooLongError(
            too_long(path, frames / info.sample_rate, limits) + " (more than its header says)")
    raise AudioTooLargeError(too_large(path, info.channels, frames, limits)
                             + " (more than its header says)")


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
