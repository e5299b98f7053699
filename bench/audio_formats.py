"""Which encoder writes each TTS output format: libsndfile (soundfile, in process) against the
ffmpeg program (a subprocess, PCM on stdin), on a typical synthesised clip.

    .venv/bin/python bench/audio_formats.py --json [--seconds 3] [--runs 20]

For each format either can write: the median time to encode one clip, the size, and whether
the length it decodes to. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from pipeline.frontend import codecs  # noqa: E402

RATE = 24_000


def _clip(seconds: float) -> np.ndarray:
    """Speech-like: a few harmonics with a syllable-rate envelope and pauses."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / RATE) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.5 * t) > -0.7)
    return (0.2 * voice * envelope).astype(np.float32)


def _ffmpeg(pcm: bytes, fmt: str) -> bytes:
    return subprocess.run(codecs.ffmpeg_command(fmt, RATE, RATE), input=pcm, capture_output=True,
                          check=True).stdout


def _soundfile(samples: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    container, subtype = codecs._SOUNDFILE[fmt]
    sf.write(buffer, samples, RATE, format=container, subtype=subtype,
             **codecs._SOUNDFILE_SETTINGS.get(fmt, {}))
    return buffer.getvalue()


def _seconds(data: bytes) -> float:
    """Decoded by ffmpeg, which reads every output of both (a piped wav's or flac's header
    cannot hold its length, which libsndfile needs)."""
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1",
                          "-ar", str(RATE), "pipe:1"], input=data, capture_output=True,
                         check=True).stdout
    return len(pcm) / 2 / RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    samples = _clip(args.seconds)
    pcm = codecs.pcm16(samples)
    encoders = {"soundfile": lambda fmt: _soundfile(samples, fmt), "ffmpeg": lambda fmt: _ffmpeg(pcm, fmt)}
    result = {"clip_seconds": args.seconds, "sample_rate": RATE, "runs": args.runs,
              "machine": platform.machine(), "formats": {}}
    for fmt in ("wav", "flac", "mp3", "opus", "aac"):
        row = {}
        for name, encode in encoders.items():
            if name == "soundfile" and fmt not in codecs._SOUNDFILE:
                continue
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                data = encode(fmt)
                times.append(time.perf_counter() - start)
            row[name] = {"ms": round(1000 * statistics.median(times), 2), "bytes": len(data),
                         "decoded_seconds": round(_seconds(data), 3)}
        result["formats"][fmt] = row
        if not args.json:
            print(fmt, json.dumps(row))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
