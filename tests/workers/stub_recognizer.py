"""A tiny randomly initialised CTC recogniser with `pipeline.inference.recognizer.Recognizer`'s interface.

The queue tests need an ASR model whose quality does not matter but whose work is real: log-mel
features, a padded batch through a Transformer encoder, CTC greedy decoding with word times.
Workers load it through `SPEECHQ_RECOGNIZER=tests.workers.stub_recognizer:StubRecognizer`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from models.decoding import stop_if
from models.transformer import Encoder, ScaledPositionalEncoding, lengths_to_mask
from pipeline.frontend.audio import load_audio
from pipeline.frontend.features import ASR_FEATURES, LogMel
from pipeline.frontend.text import CharVocab
from pipeline.inference.options import RecognitionOptions
from pipeline.inference.recognizer import Transcript, Word


class StubRecognizer(nn.Module):
    sample_rate = 16_000
    default_options = RecognitionOptions()

    def __init__(self, d_model: int = 96, layers: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.vocab = CharVocab()
        self.features = LogMel(ASR_FEATURES)
        self.proj_in = nn.Linear(ASR_FEATURES.n_mels, d_model)
        self.pos = ScaledPositionalEncoding(d_model)
        self.encoder = Encoder(d_model, 2, 4 * d_model, layers, dropout=0.0)
        self.proj_out = nn.Linear(d_model, len(self.vocab))
        self.eval()

    @classmethod
    def load(cls, path=None, device: str = "cpu", precision: str = "fp32") -> "StubRecognizer":
        return cls().to(device)

    def transcribe(self, audio, options: RecognitionOptions | None = None, should_stop=None,
                   **overrides) -> Transcript:
        return self.transcribe_batch([audio], options, should_stop, **overrides)[0]

    @torch.no_grad()
    def transcribe_batch(self, audios: list, options: RecognitionOptions | None = None,
                         should_stop=None, **overrides) -> list[Transcript]:
        """The options (beam size, decoder, weights) are taken and ignored: greedy CTC always.
        `should_stop` is asked once, before the encoder (the whole call is one step)."""
        stop_if(should_stop)
        wavs = [a if isinstance(a, Tensor) else load_audio(Path(a), self.sample_rate) for a in audios]
        lengths = torch.tensor([w.numel() for w in wavs])
        batch = nn.utils.rnn.pad_sequence(wavs, batch_first=True)  # (B, N)
        mel, frames = self.features(batch, lengths)  # (B, T, n_mels), (B,)
        mask = lengths_to_mask(frames, mel.size(1))
        h = self.encoder(self.pos(self.proj_in(mel)), mask)
        logprobs = self.proj_out(h).log_softmax(-1)  # (B, T, V)
        best, ids = logprobs.max(-1)
        return [self._decode(ids[b, : frames[b]], best[b, : frames[b]], w.numel() / self.sample_rate)
                for b, w in enumerate(wavs)]

    def _decode(self, ids: Tensor, scores: Tensor, duration: float) -> Transcript:
        step = ASR_FEATURES.frame_seconds
        chars, times, prev = [], [], self.vocab.BLANK
        for t, i in enumerate(ids.tolist()):
            if i != prev and i >= 3:
                chars.append(self.vocab.decode([i]))
                times.append(t * step)
            prev = i
        text = "".join(chars)
        words, start, word = [], None, ""
        for c, t in zip(chars + [" "], times + [duration]):
            if c == " ":
                if start is not None:
                    words.append(Word(word, round(start, 3), round(t, 3), round(float(scores.exp().mean()), 3)))
                start = None
            elif start is None:
                start, word = t, c
            else:
                word += c
        return Transcript(" ".join(text.split()), words, round(duration, 3))
