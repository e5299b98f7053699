"""What an audio file claims about itself, checked against the limits before anything is decoded.

A few kilobytes of FLAC can declare hours of 32-channel audio at 384 kHz; decoding it would take
tens of gigabytes. `inspect_audio` reads only the header and refuses a file whose decode would
exceed `AudioLimits`, with a message naming the limit. It imports no torch, so a client can check
a file before uploading it as cheaply as the gateway checks an upload.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

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


class AudioTooLargeError(AudioError):
    """More decoded samples (frames x channels) than the limit: a decompression bomb, say."""


class DecodeTimeoutError(AudioError):
    pass


class UnsupportedFormatError(AudioError):
    """Absurd sample rate or channel count."""


class FormatMismatchError(CorruptAudioError):
    """The file's name says one format, its bytes another (an mp3 renamed .wav, say)."""


@dataclass(frozen=True)
class AudioLimits:
    """What `load_audio` accepts."""

    min_seconds: float = 0.1  # shorter clips carry no recognisable speech
    max_seconds: float = 30 * 60.0  # checked from the header before decoding
    # frames x channels: what a decode holds before the down-mix; the default is 30 minutes of
    # 48 kHz stereo, so a legitimate long recording passes and a bomb does not
    max_samples: int = 30 * 60 * 48_000 * 2
    max_decode_seconds: float = 120.0  # wall time one decode may take
    silence_peak: float = 1e-4  # peak amplitude below which a clip counts as silent

    def __post_init__(self) -> None:
        if not 0 <= self.min_seconds < self.max_seconds:
            raise ValueError("need 0 <= min_seconds < max_seconds")
        if self.max_samples < 1 or self.max_decode_seconds <= 0:
            raise ValueError("max_samples and max_decode_seconds must be positive")


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    @property
    def samples(self) -> int:
        return self.frames * self.channels


def probe(path: str | os.PathLike) -> AudioInfo | None:
    """Header information without decoding, or None when soundfile cannot read the header."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def inspect_audio(path: str | os.PathLike, limits: AudioLimits = AudioLimits()) -> AudioInfo:
    """The file's header, checked against `limits` without decoding a sample.

    Raises an `AudioError` subclass for a missing, empty, mislabelled or unreadable file and for
    one whose rate, channels, duration or decoded size is out of bounds.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise EmptyAudioError(f"{path}: the file is empty (0 bytes)")
    with path.open("rb") as f:
        head = f.read(4096)
    check_container(path, head)
    info = probe(path)
    if info is None:
        info = _unread_header(path, head)
    check_header(path, info, limits)
    return info


def check_header(path: Path, info: AudioInfo, limits: AudioLimits) -> None:
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise UnsupportedFormatError(
            f"{path}: sample rate {info.sample_rate} Hz is outside "
            f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise UnsupportedFormatError(f"{path}: {info.channels} channels (1-{MAX_CHANNELS} accepted)")
    if info.frames <= 0:
        raise EmptyAudioError(f"{path}: the file holds no audio samples")
    if info.duration > limits.max_seconds:
        raise AudioTooLongError(too_long(path, info.duration, limits))
    if info.samples > limits.max_samples:
        raise AudioTooLargeError(too_large(path, info.channels, info.frames, limits))
    if info.duration < limits.min_seconds:
        raise AudioTooShortError(
            f"{path}: {info.duration:.3f} s is shorter than the minimum of {limits.min_seconds} s"
        )


def too_long(path, seconds: float, limits: AudioLimits) -> str:
    return f"{path}: {seconds:.1f} s is longer than the limit of {limits.max_seconds:.0f} s"


def too_large(path, channels: int, frames: int, limits: AudioLimits) -> str:
    return (f"{path}: {channels} channels x {frames:,} frames = {channels * frames:,} samples to "
            f"decode, over the limit of {limits.max_samples:,} decoded samples (frames x channels)")


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


def check_container(path: Path, head: bytes) -> None:
    """A file whose name and contents disagree is refused rather than guessed at."""
    named = _SUFFIX_FORMATS.get(path.suffix.lower())
    actual = sniff_format(head[:12])
    if named is not None and actual is not None and named != actual:
        raise FormatMismatchError(
            f"{path}: the name says {named.upper()} but the file holds {actual.upper()} data; "
            f"rename it to {path.stem}.{actual} or convert it"
        )


def _unread_header(path: Path, head: bytes) -> AudioInfo:
    """What soundfile could not read. Every container it knows is refused here (another decoder
    would decode whatever the header says, unbounded); a wav's own fmt chunk names the reason
    where it can. Other bytes are not audio we accept."""
    kind = sniff_format(head[:12])
    if kind == "wav":
        fmt = _wav_format(head)
        if fmt is not None:
            channels, rate = fmt
            check = AudioInfo(rate, channels, 1)
            check_header(path, check, AudioLimits(min_seconds=0.0))
    if kind is not None:
        raise CorruptAudioError(f"{path}: not a readable audio file (its {kind.upper()} header is "
                                "damaged or unsupported)")
    raise CorruptAudioError(f"{path}: not a readable audio file (wav, flac, ogg or mp3 expected)")


def _wav_format(head: bytes) -> tuple[int, int] | None:
    """(channels, sample rate) from a RIFF wav's fmt chunk within `head`, or None."""
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if chunk == b"fmt " and pos + 16 <= len(head):
            _, channels, rate = struct.unpack("<HHI", head[pos + 8:pos + 16])
            return channels, rate
        pos += 8 + size + (size & 1)
    return None
