"""Builders the tests of several packages share: tiny random checkpoints with exactly the
payload keys `Synthesizer.load` and `Recognizer.load` read, and a short non-silent wav.
Model quality does not matter where they are used."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]


def make_tiny_tts_checkpoint(path: Path, frames_per_phone: int = 4,
                             speakers: list[str] | None = None) -> Path:
    """A random FastSpeech saved with the payload keys `Synthesizer.load` reads; every phone
    lasts `frames_per_phone` frames, so outputs have a realistic length. `speakers`: a
    multi-speaker model with these voices ("flite-slt", ...)."""
    from models.fastspeech import FastSpeech, FastSpeechDims
    from pipeline.frontend.features import TTS_FEATURES
    from pipeline.frontend.text import PhoneVocab

    torch.manual_seed(0)
    vocab = PhoneVocab()
    dims = FastSpeechDims(vocab_size=len(vocab), d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1,
                          n_decoder_layers=1, duration_channels=32, postnet_channels=32,
                          postnet_layers=2, dropout=0.0, n_speakers=len(speakers or ()))
    model = FastSpeech(dims)
    with torch.no_grad():
        model.duration.proj.weight.zero_()
        model.duration.proj.bias.fill_(math.log1p(frames_per_phone))
    n = TTS_FEATURES.n_mels
    payload = {
        "kind": "tts-nat", "dims": dims.to_dict(), "state_dict": model.state_dict(),
        "features": TTS_FEATURES.to_dict(), "vocab": vocab.to_dict(),
        "stats": {"mean": [-4.0] * n, "std": [1.5] * n}, "frontend": "flite-phones",
        **({"speakers": list(speakers)} if speakers else {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def make_tiny_asr_checkpoint(path: Path, r2l_layers: int = 0) -> Path:
    """A random `pipeline.inference.recognizer` model (tiny ASRDims, a 64-piece tokenizer trained on the
    Harvard sentences) saved with the payload keys `Recognizer.load` reads; `r2l_layers`: a
    right-to-left decoder of that depth beside the same other weights."""
    from models.asr import ASRDims, SpeechTransformer
    from pipeline.frontend.features import ASR_FEATURES
    from pipeline.frontend.tokenizer import SubwordTokenizer

    torch.manual_seed(0)
    harvard = REPO / "pipeline" / "resources" / "harvard-sentences.txt"
    tokenizer = SubwordTokenizer.train(harvard.read_text().splitlines(), vocab_size=64)
    dims = ASRDims(vocab_size=len(tokenizer), subsampling=4, conv_channels=16, d_model=32, n_heads=2,
                   d_ff=64, n_encoder_layers=1, n_decoder_layers=1, dropout=0.0,
                   n_r2l_decoder_layers=r2l_layers)
    n = ASR_FEATURES.n_mels
    payload = {"kind": "asr", "dims": dims.to_dict(), "state_dict": SpeechTransformer(dims).state_dict(),
               "features": ASR_FEATURES.to_dict(), "stats": {"mean": [-4.0] * n, "std": [1.5] * n},
               "tokenizer": tokenizer.to_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def write_noise_wav(path: Path, seconds: float = 1.0, seed: int = 0, sample_rate: int = 16_000) -> Path:
    """A short non-silent wav (a tone in noise)."""
    g = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wav = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed % 400) * t) + 0.05 * g.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.astype(np.float32), sample_rate, subtype="PCM_16")
    return path
