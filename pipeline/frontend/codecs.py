"""Synthesised audio in the formats clients ask for: wav (16-bit), flac, mp3, opus (in Ogg),
aac (ADTS) and raw pcm (16-bit little-endian mono), at a chosen sample rate. Torch-free.

    data = encode(samples, 16_000, "mp3")                 # a whole file, bytes
    data = encode(samples, 16_000, "wav", sample_rate=24_000)
    cmd = ffmpeg_command("opus", 16_000, 24_000)          # a stream: PCM in, the container out

Whole files go through libsndfile (soundfile) where it writes the format (wav, flac, mp3,
opus) and through the ffmpeg program otherwise (aac): libsndfile runs in process and is the
faster of the two for short clips (docs/BENCHMARKS.md, "Audio formats"). A stream that must
leave before its end is known goes through one ffmpeg process (`ffmpeg_command`), which
writes every format to a pipe; raw pcm and wav need no encoder (a wav stream's header says
"length unknown", as a pipe's must).
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess

import numpy as np

from pipeline.inference.options import OPUS_SAMPLE_RATES, TTS_FORMATS as FORMATS, TTS_SAMPLE_RATES as SAMPLE_RATES

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "opus": "audio/ogg",
               "aac": "audio/aac", "pcm": "audio/L16"}
SUFFIXES = {"wav": ".wav", "flac": ".flac", "mp3": ".mp3", "opus": ".ogg", "aac": ".aac",
            "pcm": ".pcm"}
# libsndfile's (format, subtype) for the formats it writes
_SOUNDFILE = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"),
              "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
# libsndfile's mp3 default is a low bit rate (about 16 kbit/s); this is about 56 kbit/s
_SOUNDFILE_SETTINGS = {"mp3": {"compression_level": 0.7, "bitrate_mode": "CONSTANT"}}
# ffmpeg's encoder and muxer for each format (speech bit rates)
_FFMPEG = {"wav": ["-c:a", "pcm_s16le", "-f", "wav"], "flac": ["-c:a", "flac", "-f", "flac"],
           "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
           "opus": ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
           "aac": ["-c:a", "aac", "-b:a", "64k", "-f", "adts"],
           "pcm": ["-c:a", "pcm_s16le", "-f", "s16le"]}


class EncoderError(RuntimeError):
    """The encoder program is missing or failed."""


def check_format(format: str, sample_rate: int) -> None:
    """ValueError naming what is wrong with a format and rate pair."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}, "
                         f"not {sample_rate!r}")
    if format == "opus" and sample_rate not in OPUS_SAMPLE_RATES:
        raise ValueError("opus runs at " + ", ".join(map(str, OPUS_SAMPLE_RATES))
                         + f" Hz, not {sample_rate}")


def resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """(N,) float32 at `rate` -> at `to_rate` (soxr, high quality)."""
    if rate == to_rate:
        return samples
    import soxr

    return soxr.resample(samples, rate, to_rate, quality="HQ").astype(np.float32)


def pcm16(samples: np.ndarray) -> bytes:
    """(N,) float in [-1, 1] -> 16-bit little-endian PCM."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def encode(samples, rate: int, format: str = "wav", sample_rate: int | None = None) -> bytes:
    """(N,) samples (a float array or tensor in [-1, 1]) at `rate` -> the whole file in
    `format` at `sample_rate` (default: `rate`)."""
    sample_rate = sample_rate or rate
    check_format(format, sample_rate)
    samples = resample(np.asarray(samples, dtype=np.float32).reshape(-1), rate, sample_rate)
    if format == "pcm":
        return pcm16(samples)
    if format in _SOUNDFILE:
        import soundfile as sf

        buffer = io.BytesIO()
        container, subtype = _SOUNDFILE[format]
        sf.write(buffer, samples, sample_rate, format=container, subtype=subtype,
                 **_SOUNDFILE_SETTINGS.get(format, {}))
        return buffer.getvalue()
    return _ffmpeg_whole(pcm16(samples), sample_rate, format)


def wav_stream_header(sample_rate: int) -> bytes:
    """A 16-bit mono wav header whose sizes say "unknown" (0xFFFFFFFF), for a stream whose
    length is not known when it starts; readers take the data to the end of the file."""
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", unknown))


def ffmpeg_command(format: str, in_rate: int, out_rate: int) -> list[str]:
    """ffmpeg reading 16-bit mono PCM at `in_rate` on stdin, writing `format` at `out_rate`
    to stdout."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise EncoderError(f"{format} needs the ffmpeg program (apt-get install ffmpeg)")
    return [exe, "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(in_rate),
            "-ac", "1", "-i", "pipe:0", "-ar", str(out_rate), *_FFMPEG[format], "pipe:1"]


def _ffmpeg_whole(pcm: bytes, rate: int, format: str) -> bytes:
    proc = subprocess.run(ffmpeg_command(format, rate, rate), input=pcm, capture_output=True,
                          timeout=120)
    if proc.returncode != 0:
        raise EncoderError(f"ffmpeg could not write {format}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout
