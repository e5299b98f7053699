"""ASR training recipe: joint CTC/attention Speech-Transformer on subword units.

    speechq train asr --manifest data/corpus/manifest.jsonl --out runs/asr

What makes it converge quickly on a CPU: global mean/variance normalisation of the log-mels,
8x subsampling (an encoder position every 80 ms), subword targets (a sentencepiece unigram
model, ~5 tokens a second), the CTC branch guiding the attention early, the shortest batches
first in the first epoch, warmup then a high learning rate. SpecAugment (torchaudio's masks)
and tempo perturbation (the log-mel stretched in time by 0.9-1.1) against over-fitting to
the few synthetic voices; optionally a random equaliser per utterance (`channel_db`) against
over-fitting to their vocoders' spectral colouring, random leading and trailing silences
(`silence_seconds`) against over-fitting to their fixed pauses at either end, additive noise
(`noise_snr`) against the digital silence between their words, which no recording has, and
vocal tract length perturbation (`vtlp`) against over-fitting to their few formant patterns,
and speed perturbation (`speed`: Ko et al. 2015's resampling, done on the log-mel as a
frequency warp and a time stretch by the same factor) against their few pitches and rates.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import jiwer
import numpy as np
import torch
import torchaudio.transforms as T

from models.asr import ASRDims, RightToLeftSteps, SpeechTransformer
from models.ctc import ctc_greedy
from models.decoding import DecoderScorer, DecodingOptions, decode
from pipeline.checkpoints import float_state_dict, lineage
from pipeline.data.featcache import load_features
from pipeline.data.manifests import BucketBatchSampler, Utterance, pad_sequences, read_manifest
from pipeline.frontend.audio import load_audio
from pipeline.frontend.features import ASR_FEATURES, FeatureConfig, FeatureStats, LogMel, stretch
from pipeline.frontend.text import words_for_scoring
from pipeline.frontend.tokenizer import SubwordTokenizer
from pipeline.train.augment import WaveAugment


@dataclass(frozen=True)
class ASRDataConfig:
    manifest: str | tuple[str, ...]  # one corpus or several, each with its own feature cache
    text: str | None = None  # tokenizer training text; defaults to the manifests' transcripts
    vocab_size: int = 500
    valid_size: int = 300
    max_batch_frames: int = 10_000  # padded input frames (10 ms each) per batch
    max_utterance_seconds: float = 20.0
    speakers: tuple[str, ...] | None = None  # None: every speaker in the manifest
    spec_augment: bool = True
    tempo: tuple[float, float] = (0.9, 1.1)
    channel_db: float = 0.0  # random equaliser per utterance, up to this many dB (0: off)
    silence_seconds: float = 0.0  # each end's silence made a random length up to this (0: off)
    noise_snr: tuple[float, float] | None = None  # (low, high) dB: coloured noise at an SNR in that range
    noise_prob: float = 0.5  # the share of training utterances that get noise
    vtlp: float = 0.0  # frequency axis scaled by a random factor in [1 - vtlp, 1 + vtlp] (0: off)
    speed: float = 0.0  # speed perturbation: frequencies times s, durations over s, s in 1 +- this
    wave: WaveAugment = WaveAugment()  # waveform-domain augmentation (pipeline.train.augment)
    repeats: tuple[int, ...] | None = None  # per manifest: each utterance heard this many times an epoch
    ctc_weight: float = 0.3
    label_smoothing: float = 0.1
    reverse_weight: float = 0.0  # the right-to-left decoder's share of the attention loss (0: none)
    # with a model to start from: keep its outputs on the first manifest's utterances (the
    # speech it was trained on), this weight times the divergence from them (0: off)
    distil_weight: float = 0.0
    r2l_only: bool = False  # train only a right-to-left decoder on the frozen rest of the model
    # processes that make the training batches (read, augment, featurise) beside the training
    # loop; 0: the loop makes them itself. The batches are the same for any number
    loader_workers: int = 0


def _split(utterances: list[Utterance], valid_size: int) -> tuple[list, list]:
    """Hold out whole sentences: the validation texts are never heard in training (a tenth of
    them, at least one and at most `valid_size`)."""
    by_text = sorted({u.text for u in utterances}, key=lambda t: hash_text(t))
    if len(by_text) < 2:
        raise ValueError(f"{len(by_text)} distinct transcripts: training needs two or more, one "
                         "to hold out for validation")
    valid_texts = set(by_text[: min(valid_size, max(1, len(by_text) // 10))])
    train = [u for u in utterances if u.text not in valid_texts]
    valid = [u for u in utterances if u.text in valid_texts]
    return train, valid


def hash_text(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class SpecAugment(torch.nn.Module):
    """Two frequency masks and two time masks (Park et al. 2019, LD policy, smaller masks)."""

    def __init__(self, freq_mask: int = 15, time_mask: int = 30, n_masks: int = 2):
        super().__init__()
        self.masks = torch.nn.ModuleList(
            [T.FrequencyMasking(freq_mask, iid_masks=True) for _ in range(n_masks)]
            + [T.TimeMasking(time_mask, iid_masks=True, p=0.1) for _ in range(n_masks)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, F) normalised log-mel; masked cells become 0 (the mean)."""
        h = x.transpose(1, 2)[:, None]  # (B, T, F) -> (B, 1, F, T)
        for mask in self.masks:
            h = mask(h)
        return h[:, 0].transpose(1, 2)


_DB = math.log(10) / 10  # one decibel of power in natural-log units, the log-mel's


def random_equalizer(n_mels: int, max_db: float, rng: random.Random) -> torch.Tensor:
    """(n_mels,) a smooth random gain curve to add to log-mel frames: a tilt and two cosine
    bumps over the mel axis, peaking at a random level up to `max_db` dB. A fixed filter over
    a whole utterance, like a channel's or a vocoder's colouring, which the synthetic training
    voices share and held-out voices do not."""
    u = torch.linspace(0.0, 1.0, n_mels)
    curve = rng.uniform(-1, 1) * (2 * u - 1)
    for k in (1, 2):
        curve = curve + rng.uniform(-1, 1) * torch.cos(math.pi * k * u + rng.uniform(0, math.pi))
    peak = curve.abs().max().clamp_min(1e-6)
    return curve / peak * rng.uniform(0.0, max_db) * _DB


SPEECH_RANGE = 60 * math.log(10) / 20  # frames more than 60 dB below the loudest are silence


def random_silence(x: torch.Tensor, max_frames: int, rng: random.Random) -> torch.Tensor:
    """(T, F) log-mel -> the same speech between new leading and trailing silences, each a
    random length in [0, max_frames] frames of the utterance's quietest frame.

    Each synthetic engine opens and closes every utterance with its own fixed pause (espeak-ng
    none before, 0.3 s after; flite 0.2 s before); a model trained on those reads held-out
    speech worse when its pauses differ (0.3 s of digital silence added before Festival's slt,
    whose own 0.2 s is a faint noise floor: dev WER 0.105 -> 0.153)."""
    loudness = x.max(dim=1).values
    speech = (loudness > loudness.max() - SPEECH_RANGE).nonzero()[:, 0]
    quiet = x[int(loudness.argmin())]
    lead, trail = rng.randint(0, max_frames), rng.randint(0, max_frames)
    return torch.cat([quiet.expand(lead, -1), x[int(speech[0]): int(speech[-1]) + 1],
                      quiet.expand(trail, -1)])


def noise_bank(features: FeatureConfig, seconds: float = 25.0, seed: int = 0) -> torch.Tensor:
    """(T, n_mels) mel magnitudes of unit-variance white noise, to draw noise frames from: real
    noise's frame-to-frame fluctuation, which a constant floor would not have."""
    wav = torch.randn(int(seconds * features.sample_rate), generator=torch.Generator().manual_seed(seed))
    logmel, _ = LogMel(features)(wav)
    return logmel[0].exp()


def add_noise(x: torch.Tensor, noise: torch.Tensor, snr_db: float, floor: float) -> torch.Tensor:
    """(T, F) log-mel of clean speech -> the log-mel of that speech plus `noise` ((T, F) mel
    magnitudes, any level) scaled to `snr_db` below it. Independent phases add in power, so the
    mixture's magnitude is sqrt(speech^2 + noise^2) in each cell; the SNR is measured on the
    mel power of the whole utterance."""
    speech = x.exp().pow(2)
    noise = noise.pow(2)
    gain = speech.mean() / (noise.mean() * 10 ** (snr_db / 10))
    return (speech + gain * noise).sqrt().clamp_min(floor).log()


def random_noise(x: torch.Tensor, bank: torch.Tensor, snr: tuple[float, float], floor: float,
                 rng: random.Random) -> torch.Tensor:
    """`add_noise` with a random stretch of `bank` coloured by a random smooth tilt of up to
    12 dB (white to pink and beyond) at an SNR drawn uniformly from `snr`."""
    start = rng.randrange(max(1, bank.size(0) - x.size(0) + 1))
    noise = bank[start: start + x.size(0)]
    if noise.size(0) < x.size(0):  # longer than the bank: tile it
        noise = noise.repeat(math.ceil(x.size(0) / noise.size(0)), 1)[: x.size(0)]
    noise = noise * (random_equalizer(x.size(1), 12.0, rng) / 2).exp()  # the curve is in power
    return add_noise(x, noise, rng.uniform(*snr), floor)


def mel_centres(features: FeatureConfig) -> torch.Tensor:
    """(n_mels,) the centre frequency in Hz of each band of `LogMel` (Slaney's mel scale)."""
    import librosa  # slow to import: only where it is used

    edges = librosa.mel_frequencies(features.n_mels + 2, fmin=features.f_min, fmax=features.f_max)
    return torch.from_numpy(edges[1:-1]).float()


def warp_frequency(x: torch.Tensor, alpha: float, centres: torch.Tensor) -> torch.Tensor:
    """Vocal tract length perturbation (Jaitly and Hinton, 2013) on a (T, F) log-mel: the same
    speech from a vocal tract `alpha` times shorter, its spectrum moved up by `alpha` (down below
    1), S'(f) = S(f / alpha), up to a knee at 80% of the top band's centre (times alpha when
    alpha < 1); above the knee the warp is linear and keeps the top band where it is. Each band
    takes the log-mel interpolated at its source frequency; a source below the first band takes
    the first band's value."""
    top = float(centres[-1])
    knee = 0.8 * top * min(alpha, 1.0)
    source = torch.where(centres <= knee, centres / alpha,
                         top - (top - knee / alpha) * (top - centres) / (top - knee))
    position = torch.from_numpy(np.interp(source.numpy(), centres.numpy(), np.arange(len(centres))))
    low = position.floor().long().clamp(max=len(centres) - 2)
    frac = (position - low).float()
    return x[:, low] * (1 - frac) + x[:, low + 1] * frac


class ASRTask:
    def __init__(self, data: ASRDataConfig, seed: int = 0, device: str = "cpu",
                 tokenizer: SubwordTokenizer | None = None, dims_overrides: dict | None = None,
                 init: dict | None = None, init_record: dict | None = None,
                 teacher: dict | None = None):
        """`init`: a loaded ASR checkpoint to fine-tune (its units, normalisation, dims and
        weights; a GPU run continued on a CPU, say), or the last checkpoint of such a run when
        it resumes, with `init_record` the record that run started with. Otherwise the model
        starts fresh. `teacher`: the loaded checkpoint whose outputs `data.distil_weight`
        keeps (the one the fine-tune started from), frozen."""
        self.data, self.device = data, torch.device(device)
        self.init_record = None  # what a fine-tuned model started from
        if init is not None:
            self.init_record = init_record or lineage(init)
            tokenizer = SubwordTokenizer.from_dict(init["tokenizer"])
            dims_overrides = init["dims"]
        self.seed, self.rng = seed, random.Random(seed)
        self.features = ASR_FEATURES
        manifests = (data.manifest,) if isinstance(data.manifest, str) else data.manifest
        corpora = {m: [u for u in read_manifest(m, resolve_audio=True)
                       if u.duration <= data.max_utterance_seconds
                       and (data.speakers is None or u.speaker in data.speakers)] for m in manifests}
        utterances: dict[str, Utterance] = {}  # an utterance in two corpora is taken from the first
        for us in corpora.values():
            for u in us:
                utterances.setdefault(u.id, u)
        self.train, self.valid = _split(list(utterances.values()), data.valid_size)
        self.valid = self._spread(self.valid, data.valid_size)
        if data.repeats is not None:
            if len(data.repeats) != len(manifests) or min(data.repeats) < 1:
                raise ValueError(f"repeats: one count >= 1 per manifest, got {data.repeats}")
            source = {u.id: m for m in reversed(manifests) for u in corpora[m]}  # first wins
            times = dict(zip(manifests, data.repeats))
            self.train = [u for u in self.train for _ in range(times[source[u.id]])]
        if tokenizer is None:
            text = (Path(data.text).read_text().splitlines() if data.text
                    else [u.text for u in self.train])
            tokenizer = SubwordTokenizer.train(text, data.vocab_size)
        self.tokenizer = tokenizer
        used = {u.id for u in self.train + self.valid}
        self.mels = {}
        for m, us in corpora.items():
            self.mels.update(load_features(Path(m), [u for u in us if u.id in used and utterances[u.id] is u],
                                           self.features))
        if init is not None:
            self.stats = FeatureStats.from_dict(init["stats"])  # the model's own normalisation
        else:
            self.stats = FeatureStats.accumulate([self.mels[u.id].float() for u in self.train[::10]])
        self.targets = {u.id: torch.tensor(tokenizer.encode(u.text)) for u in self.train + self.valid}
        dims = {"vocab_size": len(tokenizer), **(dims_overrides or {})}
        wants_r2l = data.reverse_weight > 0 or data.r2l_only
        if wants_r2l and not dims.get("n_r2l_decoder_layers"):
            dims["n_r2l_decoder_layers"] = dims.get("n_decoder_layers", ASRDims.n_decoder_layers)
        self.model = SpeechTransformer(ASRDims(**dims))
        if init is not None:
            self._load_init(float_state_dict(init["state_dict"]))
        self.teacher = None
        if data.distil_weight > 0:
            if teacher is None or data.r2l_only:
                raise ValueError("distil_weight needs a teacher (the model a fine-tune starts "
                                 "from) and a left-to-right decoder that trains")
            if (teacher["tokenizer"] != self.tokenizer.to_dict()
                    or teacher["stats"] != self.stats.to_dict()):
                raise ValueError("the teacher's units or feature normalisation are not the model's")
            self.teacher = SpeechTransformer(ASRDims(**teacher["dims"]))
            self.teacher.load_state_dict(float_state_dict(teacher["state_dict"]))
            self.teacher.eval().requires_grad_(False).to(self.device)
        # the first manifest's utterances (an id in two corpora is taken from the first)
        self.distilled = {u.id for u in corpora[manifests[0]]} if self.teacher else set()
        if data.r2l_only:  # the encoder, CTC head and left-to-right decoder stay as they are
            for name, p in self.model.named_parameters():
                p.requires_grad_(name.startswith("r2l."))
        lengths = [self.mels[u.id].size(0) for u in self.train]
        self.sampler = BucketBatchSampler(lengths, data.max_batch_frames, seed=seed, shortest_first=True)
        self.augment = SpecAugment() if data.spec_augment else None
        self.noise = noise_bank(self.features, seed=seed) if data.noise_snr else None
        self.centres = mel_centres(self.features) if data.vtlp > 0 or data.speed > 0 else None
        self.logmel = LogMel(self.features) if data.wave.active else None

    def _load_init(self, state: dict) -> None:
        """Load a starting checkpoint; a right-to-left decoder it lacks starts as a copy of its
        left-to-right one."""
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("r2l.") for k in missing):
            self.model.load_state_dict(state)  # raises, naming the keys that do not fit
        if missing:
            self.model.init_r2l_from_l2r()

    @staticmethod
    def _spread(valid: list[Utterance], n: int) -> list[Utterance]:
        """At most n validation utterances, a fixed pseudo-random sample over all speakers."""
        ordered = sorted(valid, key=lambda u: hash_text(u.id))
        return ordered[:n]

    def _augmented_features(self, utterances: list[Utterance],
                            rng: random.Random) -> list[torch.Tensor]:
        """Each utterance's audio read again, augmented (`data.wave`), as a (T, n_mels) log-mel;
        the batch's other utterances are its babble."""
        rate = self.features.sample_rate
        wavs = [load_audio(u.audio, rate) for u in utterances]
        feats = []
        for i, wav in enumerate(wavs):
            others = wavs[:i] + wavs[i + 1:]
            feats.append(self.logmel(self.data.wave(wav, rate, rng, others))[0][0])
        return feats

    def collate(self, utterances: list[Utterance], train: bool, rng: random.Random | None = None):
        """(x, lengths, targets, target_lengths, distilled) on the task's device, `distilled`
        (B,) marking the utterances the teacher's outputs are kept on; in training, augmented
        with draws from `rng` (default: the task's own stream)."""
        return [t.to(self.device) for t in self._collate(utterances, train, rng or self.rng)]

    def _collate(self, utterances: list[Utterance], train: bool, rng: random.Random):
        if train and self.logmel is not None:
            feats = self._augmented_features(utterances, rng)
        else:
            feats = [self.mels[u.id].float() for u in utterances]
        if train and self.data.silence_seconds > 0:
            frames = round(self.data.silence_seconds / self.features.frame_seconds)
            feats = [random_silence(f, frames, rng) for f in feats]
        if train and self.data.vtlp > 0:
            feats = [warp_frequency(f, rng.uniform(1 - self.data.vtlp, 1 + self.data.vtlp),
                                    self.centres) for f in feats]
        speeds = [1.0] * len(feats)
        if train and self.data.speed > 0:  # as if played faster: spectrum up, time shorter
            speeds = [rng.uniform(1 - self.data.speed, 1 + self.data.speed) for _ in feats]
            feats = [warp_frequency(f, s, self.centres) for f, s in zip(feats, speeds)]
        if train and self.noise is not None:
            feats = [random_noise(f, self.noise, self.data.noise_snr, self.features.log_floor, rng)
                     if rng.random() < self.data.noise_prob else f for f in feats]
        if train and self.data.channel_db > 0:
            feats = [f + random_equalizer(f.size(1), self.data.channel_db, rng) for f in feats]
        feats = [self.stats.normalize(f) for f in feats]
        if train and (self.data.tempo != (1.0, 1.0) or self.data.speed > 0):
            feats = [stretch(f, rng.uniform(*self.data.tempo) * s) for f, s in zip(feats, speeds)]
        x, lengths = pad_sequences(feats)
        if train and self.augment is not None:
            x = self.augment(x)
        targets, target_lengths = pad_sequences([self.targets[u.id] for u in utterances], 0)
        distilled = torch.tensor([u.id in self.distilled for u in utterances])
        return x, lengths, targets, target_lengths, distilled

    def batches(self, epoch: int):
        """The epoch's training batches. Each draws its augmentation from a generator seeded by
        (seed, epoch, batch), so `loader_workers` processes make the same batches as the loop
        would."""
        self.sampler.set_epoch(epoch)
        order = [[self.train[i] for i in batch] for batch in self.sampler]
        if self.data.loader_workers == 0:
            made = (self.training_batch(utterances, epoch, i) for i, utterances in enumerate(order))
        else:
            made = torch.utils.data.DataLoader(
                _TrainingBatches(self, order, epoch), batch_size=None,
                num_workers=self.data.loader_workers, multiprocessing_context="fork",
                worker_init_fn=_one_thread, prefetch_factor=4,
                pin_memory=self.device.type == "cuda")
        for batch in made:
            yield [t.to(self.device, non_blocking=True) for t in batch]

    def training_batch(self, utterances: list[Utterance], epoch: int, index: int):
        """Batch `index` of `epoch` on the CPU, augmented by its own draws (torch's masks
        included)."""
        rng = random.Random(f"{self.seed}:{epoch}:{index}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.randrange(2**63))
            return self._collate(utterances, True, rng)

    def loss(self, batch, step: int):
        x, lengths, targets, target_lengths, distilled = batch
        if self.data.r2l_only:
            with torch.no_grad():  # frozen: no graph through the encoder
                memory, mask = self.model.encode(x, lengths)
            att, accuracy = self.model.attention_loss(memory, mask, targets, target_lengths,
                                                      self.data.label_smoothing, reverse=True)
            return {"loss": att, "accuracy_r2l": accuracy}
        teacher = None
        if self.teacher is not None and bool(distilled.any()):
            teacher = self.teacher.soft_targets(x, lengths, targets, target_lengths, distilled)
        return self.model.loss(x, lengths, targets, target_lengths,
                               ctc_weight=self.data.ctc_weight,
                               label_smoothing=self.data.label_smoothing,
                               reverse_weight=self.data.reverse_weight, teacher=teacher,
                               distil_weight=self.data.distil_weight)

    def evaluate(self) -> dict[str, float]:
        """Validation loss and greedy WERs: CTC's, the decoder's, and the right-to-left
        decoder's where there is one (alone when only it trains: the rest is frozen)."""
        refs, losses = [], []
        hyps: dict[str, list[str]] = {}
        searches = {"ctc": None, "attention": self.model, "r2l": RightToLeftSteps(self.model)}
        if self.model.r2l is None:
            del searches["r2l"]
        if self.data.r2l_only:
            searches = {"r2l": searches["r2l"]}
        for start in range(0, len(self.valid), 50):
            chunk = self.valid[start: start + 50]
            x, lengths, targets, target_lengths, _ = self.collate(chunk, train=False)
            memory, mask = self.model.encode(x, lengths)
            if self.data.r2l_only:
                loss, _ = self.model.attention_loss(memory, mask, targets, target_lengths,
                                                    self.data.label_smoothing, reverse=True)
            else:
                loss = self.model.loss(x, lengths, targets, target_lengths,
                                       reverse_weight=self.data.reverse_weight)["loss"]
            losses.append(float(loss))
            for name, steps in searches.items():
                texts = self._greedy(steps, memory, mask, reverse=name == "r2l")
                hyps.setdefault(name, []).extend(texts)
            refs += [words_for_scoring(u.text) for u in chunk]
        wers = {f"wer_{name}_greedy": round(jiwer.wer(refs, h), 4) for name, h in hyps.items()}
        score = wers["wer_r2l_greedy"] if self.data.r2l_only else min(
            wers["wer_ctc_greedy"], wers["wer_attention_greedy"])
        return {"loss": round(sum(losses) / len(losses), 4), **wers, "score": score}

    def _greedy(self, steps, memory, mask, reverse: bool) -> list[str]:
        """Greedy transcripts of a batch: CTC's (`steps` None) or a decoder's."""
        dims = self.model.dims
        if steps is None:
            tokens = ctc_greedy(self.model.ctc_logprobs(memory), mask.sum(1), dims.blank)
            return [self.tokenizer.decode(t) for t in tokens]
        hyps = decode({"decoder": DecoderScorer(steps, memory, mask)}, {}, dims.sos, dims.eos,
                      mask.sum(1), DecodingOptions(beam_size=1, max_len_ratio=1.0))
        return [self.tokenizer.decode(h[0].tokens[::-1] if reverse else h[0].tokens) for h in hyps]

    def checkpoint(self) -> dict:
        return {
            "kind": "asr",
            "dims": self.model.dims.to_dict(),
            "features": self.features.to_dict(),
            "stats": self.stats.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "data": {"manifest": self.data.manifest,
                     "speakers": sorted({u.speaker for u in self.train}),
                     "train_utterances": len(self.train),
                     "max_utterance_seconds": self.data.max_utterance_seconds,
                     "train_hours": round(sum(u.duration for u in self.train) / 3600, 3),
                     "repeats": self.data.repeats, "wave_augment": asdict(self.data.wave),
                     "distil_weight": self.data.distil_weight},
            **({"initialised_from": self.init_record} if self.init_record else {}),
        }


class _TrainingBatches(torch.utils.data.Dataset):
    """An epoch's batches for a DataLoader's worker processes (forked: the task is not copied
    until a worker touches it)."""

    def __init__(self, task: ASRTask, order: list[list[Utterance]], epoch: int):
        self.task, self.order, self.epoch = task, order, epoch

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int):
        return self.task.training_batch(self.order[index], self.epoch, index)


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)  # a worker per core; torch's own threads would oversubscribe them
