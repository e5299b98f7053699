"""Audio loading and validation: every unusable input gives its named error, cleanly."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.frontend import audio
from pipeline.frontend.audio import (
    AudioError,
    AudioLimits,
    AudioNotFoundError,
    AudioTooLongError,
    AudioTooShortError,
    CorruptAudioError,
    EmptyAudioError,
    FormatMismatchError,
    InvalidSamplesError,
    SilentAudioError,
    UnsupportedFormatError,
    decode_bytes,
    load_audio,
    save_wav,
)

RATE = 16_000


def _tone(seconds: float = 0.5, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _wav_header(rate: int, frames: int, channels: int = 1, bits: int = 16) -> bytes:
    """A canonical 44-byte PCM wav header, written by hand so it can say absurd things."""
    block = channels * bits // 8
    data_bytes = frames * block
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
        + b"data" + struct.pack("<I", data_bytes)
    )


def _load_error(path: Path, error: type[AudioError], **kwargs) -> AudioError:
    """load_audio must raise `error` from our code, with a message, hiding library internals."""
    with pytest.raises(error) as excinfo:
        load_audio(path, RATE, **kwargs)
    e = excinfo.value
    assert str(path.name) in str(e) and len(str(e)) > len(str(path)) + 10
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)
    assert Path(excinfo.traceback[-1].path).name in ("audio.py", "header.py")  # by us, not a library
    return e


# ---------------------------------------------------------------- each validation error


def test_missing_file(tmp_path):
    _load_error(tmp_path / "nowhere.wav", AudioNotFoundError)


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert "empty" in str(_load_error(path, EmptyAudioError))


def test_header_without_samples(tmp_path):
    path = tmp_path / "no-frames.wav"
    path.write_bytes(_wav_header(RATE, 0))
    _load_error(path, EmptyAudioError)


@pytest.mark.parametrize("content", [
    b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk" * 10,  # a wav signature, then garbage
    b"this is a text file, not audio\n" * 40,
    bytes(range(256)) * 8,
])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(content)
    assert "not a readable audio file" in str(_load_error(path, CorruptAudioError))


def test_absurd_sample_rate_from_header(tmp_path):
    path = tmp_path / "gigahertz.wav"
    path.write_bytes(_wav_header(1_000_000_000, 100) + b"\x01\x00" * 100)
    assert "1000000000 Hz" in str(_load_error(path, UnsupportedFormatError))


def test_absurd_channel_count_from_header(tmp_path):
    path = tmp_path / "many-channels.wav"
    path.write_bytes(_wav_header(RATE, 100, channels=200) + b"\x01\x00" * 200 * 100)
    assert "200 channels" in str(_load_error(path, UnsupportedFormatError))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_samples(tmp_path, bad):
    samples = _tone()
    samples[1234] = bad
    path = tmp_path / "bad-samples.wav"
    sf.write(path, samples, RATE, subtype="FLOAT")
    _load_error(path, InvalidSamplesError)


def test_mp3_renamed_wav(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write mp3")
    mp3 = tmp_path / "speech.mp3"
    sf.write(mp3, _tone(1.0), RATE, format="MP3")
    assert load_audio(mp3, RATE).numel() > 0.9 * RATE  # named right, it loads
    renamed = tmp_path / "speech.wav"
    renamed.write_bytes(mp3.read_bytes())
    e = _load_error(renamed, FormatMismatchError)
    assert "MP3" in str(e) and "speech.mp3" in str(e)
    assert isinstance(e, CorruptAudioError)


def test_silence(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(RATE, np.float32), RATE)
    _load_error(path, SilentAudioError)


def test_too_short(tmp_path):
    path = tmp_path / "blip.wav"
    sf.write(path, _tone(0.02), RATE)
    _load_error(path, AudioTooShortError)


def test_too_long_from_header_before_decoding(tmp_path, monkeypatch):
    # the header says one hour of 16 kHz audio; the file is sparse, so it costs no disk
    frames = 3600 * RATE
    path = tmp_path / "hour.wav"
    with path.open("wb") as f:
        f.write(_wav_header(RATE, frames))
        f.truncate(44 + 2 * frames)

    def no_decoding(*args):
        raise AssertionError("decoded a file its header already ruled out")

    monkeypatch.setattr(audio, "_decode", no_decoding)
    assert "1800 s" in str(_load_error(path, AudioTooLongError))


def test_configurable_length_limit(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(1.0), RATE)
    _load_error(path, AudioTooLongError, limits=AudioLimits(max_seconds=0.5))
    with pytest.raises(ValueError):
        AudioLimits(min_seconds=2.0, max_seconds=1.0)


def test_every_error_is_a_value_error():
    # callers (the HTTP layer) catch AudioError, or ValueError, and show the message
    for error in (AudioNotFoundError, EmptyAudioError, CorruptAudioError, FormatMismatchError,
                  SilentAudioError, InvalidSamplesError, AudioTooShortError, AudioTooLongError,
                  UnsupportedFormatError):
        assert issubclass(error, AudioError) and issubclass(error, ValueError)


# ---------------------------------------------------------------- what does load


def test_stereo_is_mixed_to_mono_and_resampled(tmp_path):
    left = _tone(1.0, rate=22_050)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, 0.5 * left], axis=1), 22_050)
    wav = load_audio(path, RATE)
    assert wav.dim() == 1 and wav.dtype == torch.float32
    assert abs(wav.numel() - RATE) <= 1
    assert wav.abs().max().item() == pytest.approx(0.95, abs=1e-3)  # peak-normalised


def test_without_normalisation_the_level_is_kept(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, _tone(amplitude=0.1), RATE, subtype="FLOAT")
    wav = load_audio(path, RATE, normalize=False)
    assert wav.abs().max().item() == pytest.approx(0.1, abs=1e-3)


def test_save_wav_round_trip(tmp_path):
    wav = torch.from_numpy(_tone())
    path = save_wav(tmp_path / "out" / "tone.wav", wav, RATE)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
    back = load_audio(path, RATE, normalize=False)
    assert torch.allclose(back, wav, atol=1e-4)
    assert [p.name for p in path.parent.iterdir()] == ["tone.wav"]  # no temporary left behind


def test_decode_bytes_names_the_upload_not_a_temporary_file(tmp_path):
    with pytest.raises(EmptyAudioError, match="clip.wav"):
        decode_bytes(b"", RATE, name="clip.wav")
    with pytest.raises(CorruptAudioError) as excinfo:
        decode_bytes(b"not audio at all" * 100, RATE, name="clip.wav")
    assert "clip.wav" in str(excinfo.value) and "/tmp" not in str(excinfo.value)
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(), RATE)
    assert decode_bytes(path.read_bytes(), RATE, name="tone.wav").numel() == int(0.5 * RATE)


# ------------------------------------------------------------------ hostile headers


def test_a_flac_bomb_is_refused_from_its_header_naming_the_limit(tmp_path):
    """30 minutes of 8-channel 384 kHz in 6 MB: within each limit alone, far over their product."""
    from tests.bombs import flac_bomb

    path = flac_bomb(tmp_path / "bomb.flac")
    assert path.stat().st_size < 7 * 2**20
    with pytest.raises(audio.AudioTooLargeError, match="limit of 172,800,000 decoded samples"):
        audio.inspect_audio(path)
    with pytest.raises(audio.AudioTooLargeError):
        load_audio(path, RATE)


def test_a_header_that_understates_its_length_bounds_the_decode(tmp_path):
    """STREAMINFO says 0.5 s; the frames hold 20 s. What is decoded is what was checked (the
    decode also counts frames itself, for readers that trust the stream over the header)."""
    from tests.bombs import flac_bomb

    path = flac_bomb(tmp_path / "liar.flac", channels=4, rate=48_000, seconds=20.0,
                     declared_seconds=0.5)
    assert audio.inspect_audio(path).duration == 0.5
    wav = load_audio(path, RATE, AudioLimits(max_samples=4 * 48_000))
    assert wav.numel() <= RATE // 2


def test_a_slow_decode_stops_at_the_time_limit(tmp_path):
    from tests.bombs import flac_bomb

    path = flac_bomb(tmp_path / "long.flac", channels=2, rate=48_000, seconds=30.0)
    with pytest.raises(audio.DecodeTimeoutError, match="limit of 1e-06 s"):
        load_audio(path, RATE, AudioLimits(max_decode_seconds=1e-6))


def test_a_10000_channel_wav_header_is_refused_without_decoding(tmp_path):
    import time

    from tests.bombs import wav_channels_bomb

    path = wav_channels_bomb(tmp_path / "wide.wav")
    start = time.monotonic()
    with pytest.raises(UnsupportedFormatError, match="10000 channels"):
        load_audio(path, RATE)
    assert time.monotonic() - start < 1.0


def test_many_channels_are_down_mixed_block_by_block(tmp_path):
    tone = _tone(3.0)
    path = tmp_path / "eight.flac"
    sf.write(path, np.stack([tone] * 8, axis=1), RATE, subtype="PCM_16")
    wav = load_audio(path, RATE, normalize=False)
    assert wav.shape == (3 * RATE,) and torch.allclose(wav, torch.from_numpy(tone), atol=1e-3)
