"""TTS training recipes: the data both share, and the non-autoregressive FastSpeech model.

    speechq train tts-nat --manifest data/corpus/manifest.jsonl --speaker flite-slt --out runs/tts-nat
    speechq train tts-nat ... --teacher runs/tts-ar/best.pt     # durations from AR attention

The autoregressive Transformer-TTS recipe is in `pipeline.train_tts_ar`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from models.fastspeech import FastSpeech, FastSpeechDims
from pipeline.data import BucketBatchSampler, Utterance, pad_sequences, read_manifest
from pipeline.featcache import load_features
from pipeline.features import TTS_FEATURES, FeatureConfig, FeatureStats
from pipeline.frontend import PhoneFrontend


@dataclass(frozen=True)
class TTSDataConfig:
    manifest: str
    speaker: str = "flite-slt"
    valid_size: int = 100  # utterances held out for validation (the last ids in sorted order)
    max_batch_frames: int = 12_000  # padded mel frames per batch
    max_utterance_seconds: float = 12.0
    limit: int | None = None  # use only the first N training utterances


def phone_durations(phones: list[tuple[str, float]], n_frames: int, config: FeatureConfig) -> list[int]:
    """flite's (phone, end seconds) -> frames per phone, summing to `n_frames`."""
    ends, last = [], 0
    for _, end in phones:
        last = max(last, min(round(end / config.frame_seconds), n_frames))
        ends.append(last)
    ends[-1] = n_frames  # the last phone (a pause) takes what rounding left over
    return [b - a for a, b in zip([0] + ends[:-1], ends)]


def split_train_valid(utterances: list[Utterance], valid_size: int) -> tuple[list, list]:
    ordered = sorted(utterances, key=lambda u: u.id)
    return ordered[:-valid_size], ordered[-valid_size:]


class TTSCorpus:
    """One speaker's utterances of a manifest, split into training and validation, with their
    log-mels (from the feature cache) and the training set's normalisation statistics."""

    def __init__(self, data: TTSDataConfig, require_phones: bool = False):
        self.data = data
        self.features = TTS_FEATURES
        utterances = [u for u in read_manifest(data.manifest, resolve_audio=True)
                      if u.speaker == data.speaker and (u.phones or not require_phones)
                      and u.duration <= data.max_utterance_seconds]
        if len(utterances) <= data.valid_size:
            what = " with phones" if require_phones else ""
            raise ValueError(f"only {len(utterances)} utterances of {data.speaker}{what}")
        train, valid = split_train_valid(utterances, data.valid_size)
        self.train = train[: data.limit] if data.limit else train
        self.valid = valid
        self.mels = load_features(Path(data.manifest), self.train + self.valid, self.features)
        self.stats = FeatureStats.accumulate([self.mels[u.id].float() for u in self.train[:2000]])

    @property
    def utterances(self) -> list[Utterance]:
        return self.train + self.valid

    def describe(self) -> dict:
        return {"manifest": self.data.manifest, "speaker": self.data.speaker,
                "train_utterances": len(self.train),
                "train_hours": round(sum(u.duration for u in self.train) / 3600, 3)}


class FastSpeechTask:
    """Phones in, normalised log-mel out; durations from flite's segmentation or, with a
    `teacher` (an autoregressive checkpoint), from its attention, in the teacher's units."""

    def __init__(self, data: TTSDataConfig, dims: FastSpeechDims | None = None, seed: int = 0,
                 device: str = "cpu", teacher: str | None = None):
        self.data, self.seed, self.device = data, seed, torch.device(device)
        corpus = TTSCorpus(data, require_phones=teacher is None)
        self.features, self.stats = corpus.features, corpus.stats
        self.train, self.valid = corpus.train, corpus.valid
        self.data_info = corpus.describe()
        if teacher is None:
            self.frontend = PhoneFrontend()
            self.duration_source = {"durations": "flite"}
            self.examples = {u.id: self._flite_example(u, corpus.mels[u.id])
                             for u in corpus.utterances}
        else:
            from pipeline.train_tts_ar import teacher_alignment

            alignment = teacher_alignment(teacher, corpus, device=device)
            self.frontend = alignment.frontend
            self.duration_source = alignment.describe()
            self.examples = {u.id: (*alignment.examples[u.id], corpus.mels[u.id])
                             for u in corpus.utterances}
        self.vocab = self.frontend.vocab
        self.model = FastSpeech(dims or FastSpeechDims(vocab_size=len(self.vocab)))
        lengths = [self.examples[u.id][2].size(0) for u in self.train]
        self.sampler = BucketBatchSampler(lengths, data.max_batch_frames, seed=seed)

    def _flite_example(self, u: Utterance, mel: torch.Tensor):
        tokens = self.frontend.encode_utterance(u)
        durations = phone_durations(u.phones, mel.size(0), self.features)
        return torch.tensor(tokens), torch.tensor(durations), mel

    def _collate(self, ids: list[str]):
        tokens, durations, mels = zip(*(self.examples[i] for i in ids))
        tokens, _ = pad_sequences(tokens, self.vocab.PAD)
        durations, _ = pad_sequences(durations, 0)
        mel, mel_lengths = pad_sequences([self.stats.normalize(m.float()) for m in mels])
        return [t.to(self.device) for t in (tokens, durations, mel, mel_lengths)]

    def batches(self, epoch: int):
        self.sampler.set_epoch(epoch)
        for batch in self.sampler:
            yield self._collate([self.train[i].id for i in batch])

    def loss(self, batch, step: int):
        return self.model.loss(*batch)

    def evaluate(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        ids = [u.id for u in self.valid]
        for start in range(0, len(ids), 25):
            losses = self.model.loss(*self._collate(ids[start: start + 25]))
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(ids[start: start + 25]) / len(ids)
        return {**{k: round(v, 5) for k, v in totals.items()}, "score": totals["loss"]}

    def checkpoint(self) -> dict:
        return {
            "kind": "tts-nat",
            "dims": self.model.dims.to_dict(),
            "features": self.features.to_dict(),
            "stats": self.stats.to_dict(),
            "vocab": self.vocab.to_dict(),
            "frontend": "flite-phones" if self.frontend.units == "phones" else self.frontend.units,
            "data": {**self.data_info, **self.duration_source},
        }
