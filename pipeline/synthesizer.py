"""`Synthesizer`: text -> waveform with a trained TTS checkpoint and Griffin-Lim.

    synth = Synthesizer.load()                       # the shipped non-autoregressive model
    result = synth.synthesize("The birch canoe slid on the smooth planks.")
    save_wav("out.wav", result.wav, result.sample_rate)

Long text is split into sentences, synthesised as one batch and joined with short pauses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.fastspeech import FastSpeech, FastSpeechDims
from pipeline.checkpoints import default_checkpoint, float_state_dict, load_checkpoint
from pipeline.features import FeatureConfig, FeatureStats, GriffinLim
from pipeline.text import PhoneVocab, TextError, check_text, flite_phones, normalize_text, split_sentences

SENTENCE_PAUSE_SECONDS = 0.2


@dataclass
class SynthesisResult:
    text: str
    wav: Tensor  # (N,) float32 in [-1, 1]
    sample_rate: int
    hit_length_cap: bool = False  # an autoregressive decoder that never predicted its stop
    focus_rate: float | None = None  # mean max attention weight (1 = perfectly focused), AR only
    sentences: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.wav.numel() / self.sample_rate


class Synthesizer:
    def __init__(self, model: FastSpeech, checkpoint: dict, device: str = "cpu",
                 griffin_lim_iters: int = 32):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.checkpoint_info = {k: checkpoint.get(k) for k in ("kind", "data", "metrics")}
        self.features = FeatureConfig.from_dict(checkpoint["features"])
        self.stats = FeatureStats.from_dict(checkpoint["stats"])
        self.vocab = PhoneVocab(tuple(checkpoint["vocab"]["phones"]))
        self.vocoder = GriffinLim(self.features, n_iter=griffin_lim_iters).to(self.device)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str = "cpu",
             griffin_lim_iters: int = 32) -> "Synthesizer":
        ckpt = load_checkpoint(path or default_checkpoint("tts-nat"), kinds=("tts-nat",))
        model = FastSpeech(FastSpeechDims(**ckpt["dims"]))
        model.load_state_dict(float_state_dict(ckpt["state_dict"]))
        return cls(model, ckpt, device, griffin_lim_iters)

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    def _tokens(self, sentence: str) -> list[int]:
        ids = self.vocab.encode(flite_phones(normalize_text(sentence)))
        if len(ids) <= 2:  # only pauses: nothing speakable survived normalisation
            raise TextError(f"nothing to say in {sentence!r}")
        return ids

    @torch.no_grad()
    def mels(self, sentences: list[str], speed: float = 1.0) -> list[Tensor]:
        """One (T, n_mels) log-mel per sentence, generated as one padded batch."""
        tokens = [torch.tensor(self._tokens(s)) for s in sentences]
        batch = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=self.vocab.PAD)
        out = self.model(batch.to(self.device), speed=speed)
        return [self.stats.denormalize(out.mel[i, : out.mel_lengths[i]]) for i in range(len(sentences))]

    def synthesize(self, text: str, speed: float = 1.0) -> SynthesisResult:
        return self.synthesize_batch([text], speed)[0]

    def synthesize_batch(self, texts: list[str], speed: float = 1.0) -> list[SynthesisResult]:
        """Every text is checked first, so one bad text fails before any work is done."""
        texts = [check_text(t) for t in texts]
        per_text = [split_sentences(t) for t in texts]
        flat = [s for sentences in per_text for s in sentences]
        wavs = iter([self.vocoder(mel.to(self.device)).cpu() for mel in self.mels(flat, speed)])
        pause = torch.zeros(int(SENTENCE_PAUSE_SECONDS * self.sample_rate))
        results = []
        for text, sentences in zip(texts, per_text):
            parts = []
            for i, _ in enumerate(sentences):
                parts += [pause, next(wavs)] if i else [next(wavs)]
            results.append(SynthesisResult(text, torch.cat(parts), self.sample_rate, sentences=sentences))
        return results
