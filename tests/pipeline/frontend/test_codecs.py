"""Every TTS output format decodes back to the audio's length and rate."""

import io
import subprocess

import numpy as np
import pytest
import soundfile as sf

from pipeline.frontend.codecs import FORMATS, encode, ffmpeg_command, wav_stream_header

RATE = 16_000
SIGNAL = (0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * RATE) / RATE)).astype(np.float32)


def _decoded_seconds(data: bytes, fmt: str, rate: int) -> float:
    if fmt == "pcm":
        return len(data) / 2 / rate
    if fmt == "aac":  # libsndfile has no AAC reader
        pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1",
                              "-ar", str(rate), "pipe:1"], input=data, capture_output=True,
                             check=True).stdout
        return len(pcm) / 2 / rate
    samples, got_rate = sf.read(io.BytesIO(data))
    assert got_rate == rate
    return len(samples) / got_rate


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rate", [16_000, 24_000])
def test_each_format_decodes_to_the_same_length(fmt, rate):
    data = encode(SIGNAL, RATE, fmt, sample_rate=rate)
    # ADTS has no edit list and libsndfile's mp3 no gapless header: a decoder also plays the
    # encoder's priming and the padding of the last frame (two frames at most)
    slack = 2048 / rate if fmt in ("aac", "mp3") else 0.06
    assert _decoded_seconds(data, fmt, rate) == pytest.approx(2.0, abs=slack)


def test_wav_keeps_the_samples():
    samples, rate = sf.read(io.BytesIO(encode(SIGNAL, RATE, "wav")), dtype="float32")
    assert rate == RATE and np.abs(samples - SIGNAL).max() < 1e-4


def test_bad_formats_and_rates_are_refused():
    with pytest.raises(ValueError, match="format must be one of"):
        encode(SIGNAL, RATE, "ogg")
    with pytest.raises(ValueError, match="sample_rate must be one of"):
        encode(SIGNAL, RATE, "wav", sample_rate=12_345)
    with pytest.raises(ValueError, match="opus runs at"):
        encode(SIGNAL, RATE, "opus", sample_rate=22_050)


def test_a_streamed_wav_reads_to_its_end():
    pcm = (SIGNAL * 32767).astype("<i2").tobytes()
    samples, rate = sf.read(io.BytesIO(wav_stream_header(RATE) + pcm), dtype="float32")
    assert rate == RATE and len(samples) == len(SIGNAL)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac"])
def test_the_stream_encoder_writes_to_a_pipe(fmt):
    pcm = (SIGNAL * 32767).astype("<i2").tobytes()
    out = subprocess.run(ffmpeg_command(fmt, RATE, RATE), input=pcm, capture_output=True,
                         check=True).stdout
    # written to a pipe, an mp3 cannot go back to write its gapless-playback header either
    slack = 2048 / RATE if fmt in ("aac", "mp3") else 0.06
    assert _decoded_seconds(out, "aac" if fmt in ("aac", "flac") else fmt, RATE) == pytest.approx(
        2.0, abs=slack)
