"""Each waveform augmentation changes the audio as it says: a property test each."""

import math
import random

import pytest
import torch

from pipeline.train.augment import (
    TELEPHONE_CODECS,
    WaveAugment,
    add_noise,
    babble,
    change_speed,
    coloured_noise,
    reverberate,
    room_impulse_response,
    shift_pitch,
    telephone,
    trim_silence,
)

RATE = 16_000


def _tone(seconds: float, hz: float = 440.0) -> torch.Tensor:
    t = torch.arange(round(seconds * RATE)) / RATE
    return 0.5 * torch.sin(2 * math.pi * hz * t)


def _centroid(wav: torch.Tensor) -> float:
    power = torch.fft.rfft(wav).abs().pow(2)
    freqs = torch.fft.rfftfreq(wav.numel(), 1 / RATE)
    return float((power * freqs).sum() / power.sum())


def _peak_hz(wav: torch.Tensor) -> float:
    power = torch.fft.rfft(wav).abs()
    return float(torch.fft.rfftfreq(wav.numel(), 1 / RATE)[power.argmax()])


@pytest.mark.parametrize("factor", [0.85, 1.0, 1.15])
def test_speed_divides_the_length_and_multiplies_the_pitch(factor):
    out = change_speed(_tone(1.0), factor)
    assert out.numel() / RATE == pytest.approx(1.0 / factor, rel=0.01)
    assert _peak_hz(out) == pytest.approx(440 * factor, rel=0.01)


@pytest.mark.parametrize("semitones", [-3.0, 2.0, 4.5])
def test_a_pitch_shift_moves_every_frequency_and_keeps_the_length(semitones):
    out = shift_pitch(_tone(1.0, 300.0), RATE, semitones)
    assert out.numel() == RATE
    assert _peak_hz(out) == pytest.approx(300 * 2 ** (semitones / 12), rel=0.01)


def test_trimming_cuts_the_silence_around_speech_to_what_is_kept():
    wav = torch.cat([torch.zeros(RATE), _tone(0.5), torch.zeros(RATE // 2)])
    out = trim_silence(wav, RATE, keep_before=0.02, keep_after=0.0)
    assert out.numel() / RATE == pytest.approx(0.52, abs=0.011)
    assert out[: round(0.02 * RATE) - RATE // 100].abs().max() == 0  # the pause kept before
    assert out[-RATE // 100:].abs().max() > 0.1  # ends in the tone


def test_the_impulse_response_decays_by_60_db_in_its_rt60():
    rt60 = 0.5
    rir = room_impulse_response(RATE, rt60, random.Random(0))
    hop = RATE // 50  # 20 ms windows of the tail's power
    power = rir[round(0.06 * RATE):].pow(2)  # after the early reflections
    windows = power[: power.numel() // hop * hop].view(-1, hop).mean(1)
    times = (torch.arange(windows.numel()) * hop + hop / 2) / RATE
    slope = torch.linalg.lstsq(torch.stack([times, torch.ones_like(times)], 1),
                               10 * windows.log10()[:, None]).solution[0].item()  # dB per second
    assert -60 / slope == pytest.approx(rt60, rel=0.15)


def test_reverberation_keeps_the_length_and_rings_on_after_a_click():
    click = torch.zeros(RATE)
    click[100] = 1.0
    out = reverberate(click, room_impulse_response(RATE, 0.6, random.Random(1)))
    assert out.numel() == click.numel()
    assert out[100 + RATE // 10: 100 + RATE // 5].pow(2).sum() > 1e-4  # a tail 100-200 ms later
    assert out[:100].abs().max() < 1e-6  # nothing before the sound (but FFT rounding)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
@pytest.mark.parametrize("kind", ["coloured", "babble"])
def test_noise_is_added_at_the_snr_asked_for(snr_db, kind):
    wav = _tone(1.0)
    rng = random.Random(2)
    noise = (coloured_noise(wav.numel(), rng) if kind == "coloured"
             else babble([_tone(0.7, 300), _tone(1.3, 700), _tone(0.4, 1200)], wav.numel(), rng))
    out = add_noise(wav, noise, snr_db)
    measured = 10 * math.log10(wav.pow(2).mean() / (out - wav).pow(2).mean())
    assert measured == pytest.approx(snr_db, abs=0.05)


@pytest.mark.parametrize("codec", list(TELEPHONE_CODECS))
def test_the_telephone_channel_band_limits_the_audio(codec):
    wideband = torch.randn(RATE, generator=torch.Generator().manual_seed(3)) * 0.3
    out = telephone(wideband, RATE, codec)
    assert out.numel() == wideband.numel()
    power = torch.fft.rfft(out).abs().pow(2)
    freqs = torch.fft.rfftfreq(out.numel(), 1 / RATE)
    assert power[freqs > 4200].sum() / power.sum() < 0.01  # nothing above the 8 kHz Nyquist
    assert power[freqs < 150].sum() / power.sum() < 0.02  # nor in the hum band
    assert _centroid(out) < 0.6 * _centroid(wideband)


def test_each_codec_adds_the_coding_noise_of_its_bit_rate():
    """Against the same channel uncoded, on three in-band tones: 8-bit G.711 (64 kbit/s) about
    40 dB SNR, 32 kbit/s ADPCM about 27, 13 kbit/s GSM about 23."""
    t = torch.arange(RATE) / RATE
    tones = sum(0.2 * torch.sin(2 * math.pi * hz * t) for hz in (500, 1100, 2300))
    clean = telephone(tones, RATE, None)
    middle = slice(RATE // 10, -RATE // 10)

    def snr(codec: str) -> float:
        noise = (telephone(tones, RATE, codec) - clean)[middle]
        return 10 * math.log10(clean[middle].pow(2).mean() / noise.pow(2).mean())

    measured = {codec: snr(codec) for codec in TELEPHONE_CODECS}
    assert 35 < measured["ulaw"] < 45 and 35 < measured["alaw"] < 45
    assert 20 < measured["adpcm"] < 32
    assert 15 < measured["gsm"] < measured["adpcm"]


def test_an_unknown_codec_is_refused():
    with pytest.raises(ValueError, match="codec"):
        telephone(_tone(0.1), RATE, "amr")


def test_clipping_flattens_the_peaks_and_the_result_is_peak_normalised():
    out = WaveAugment(clip_share=1.0)(_tone(0.5), RATE, random.Random(4))
    assert out.abs().max() == pytest.approx(0.95, abs=1e-4)
    assert (out.abs() > 0.949).float().mean() > 0.05  # many samples at the clipped level


def test_every_part_off_changes_only_the_level():
    wav = _tone(0.5)
    out = WaveAugment()(wav, RATE, random.Random(5))
    assert torch.allclose(out, wav / wav.abs().max() * 0.95)


def test_all_parts_on_give_a_finite_waveform_of_about_the_length():
    wav = torch.cat([torch.zeros(RATE // 4), _tone(1.0), torch.zeros(RATE // 4)])
    augment = WaveAugment(trim_share=1, speed=0.1, pitch=3, reverb_share=1, noise_share=1,
                          telephone_share=1, gain_db=6, clip_share=1)
    out = augment(wav, RATE, random.Random(6), others=[_tone(2.0, 200)])
    assert torch.isfinite(out).all() and 0.8 < out.numel() / RATE < 1.3


@pytest.mark.parametrize("bad", [dict(reverb_share=1.5), dict(speed=0.6), dict(snr=(30, 5)),
                                 dict(rt60=(0.0, 0.5)), dict(pitch=13)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        WaveAugment(**bad)
