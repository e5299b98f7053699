"""The non-autoregressive FastSpeech recipe (its data: `pipeline.train.tts_data`).

    speechq train tts-nat --manifest data/corpus/manifest.jsonl --speaker flite-slt --out runs/tts-nat
    speechq train tts-nat ... --teacher runs/tts-ar/best.pt     # durations from AR attention
    speechq train tts-nat ... --speaker flite-slt,flite-awb --init-from checkpoints/tts-nat-slt.pt

The autoregressive Transformer-TTS recipe is in `pipeline.train.tts_ar`.
"""

from __future__ import annotations

import torch

from models.fastspeech import FastSpeech, FastSpeechDims
from pipeline.checkpoints import lineage
from pipeline.frontend.features import FeatureStats
from pipeline.data.manifests import BucketBatchSampler, Utterance, pad_sequences
from pipeline.frontend.units import PhoneFrontend
from pipeline.train.tts_data import TTSCorpus, TTSDataConfig, phone_durations


class FastSpeechTask:
    """Phones in, normalised log-mel out; durations from flite's segmentation or, with a
    `teacher` (an autoregressive checkpoint), from its attention, in the teacher's units.
    Several speakers make a multi-speaker model (a speaker embedding, `FastSpeechDims.n_speakers`);
    `init` (a loaded "tts-nat" checkpoint with the same units) starts it from that model's
    weights and normalisation, each new speaker's embedding at zero."""

    def __init__(self, data: TTSDataConfig, dims: FastSpeechDims | None = None, seed: int = 0,
                 device: str = "cpu", teacher: str | None = None, init: dict | None = None):
        self.data, self.seed, self.device = data, seed, torch.device(device)
        corpus = TTSCorpus(data, require_phones=teacher is None)
        self.features, self.stats = corpus.features, corpus.stats
        if init is not None:  # the start's normalisation, so its weights mean what they did
            self.stats = FeatureStats.from_dict(init["stats"])
        self.speakers = data.speakers
        self.speaker_index = {s: i for i, s in enumerate(self.speakers)}
        self.utterance_speaker = {u.id: self.speaker_index[u.speaker] for u in corpus.utterances}
        self.train, self.valid = corpus.train, corpus.valid
        self.data_info = corpus.describe()
        if teacher is None:
            self.frontend = PhoneFrontend()
            self.duration_source = {"durations": "flite"}
            self.examples = {u.id: self._flite_example(u, corpus.mels[u.id])
                             for u in corpus.utterances}
        else:
            from pipeline.train.tts_ar import teacher_alignment

            alignment = teacher_alignment(teacher, corpus, device=device)
            self.frontend = alignment.frontend
            self.duration_source = alignment.describe()
            self.examples = {u.id: (*alignment.examples[u.id], corpus.mels[u.id])
                             for u in corpus.utterances}
        self.vocab = self.frontend.vocab
        n_speakers = len(self.speakers) if len(self.speakers) > 1 else 0
        self.model = FastSpeech(dims or FastSpeechDims(vocab_size=len(self.vocab),
                                                       n_speakers=n_speakers))
        self.init_record = None
        if init is not None:
            warm_start(self.model, init, self.vocab)
            self.init_record = lineage(init)
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
        batch = [tokens, durations, mel, mel_lengths]
        if self.model.dims.n_speakers:
            batch.append(torch.tensor([self.utterance_speaker[i] for i in ids]))
        return [t.to(self.device) for t in batch]

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
            **({"speakers": list(self.speakers)} if self.model.dims.n_speakers else {}),
            **({"initialised_from": self.init_record} if self.init_record else {}),
        }


def warm_start(model: FastSpeech, init: dict, vocab) -> None:
    """`model`'s weights from a "tts-nat" checkpoint of the same units and sizes; a speaker
    embedding the start lacks stays at zero (every speaker starts as the start's voice)."""
    from pipeline.checkpoints import float_state_dict

    if init["vocab"] != vocab.to_dict():
        raise ValueError("--init-from: the checkpoint's units differ from this corpus's")
    state = float_state_dict(init["state_dict"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("speaker.") for k in missing):
        raise ValueError(f"--init-from: the sizes differ (missing {missing}, unexpected {unexpected})")
