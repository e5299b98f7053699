"""The autoregressive Transformer-TTS recipe, and durations from its attention for the NAT model.

    speechq train tts --manifest data/corpus/manifest.jsonl --speaker flite-slt \\
        --attention location --out runs/tts-ar

Validation reports teacher-forced losses, how well the attention's durations match flite's
phone segmentation (where the manifest carries it), and free-running synthesis of a few
utterances (length-cap hits, focus rate, length ratio); it saves attention plots as PNG.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from models.tts import (
    SynthesisOptions,
    TransformerTTS,
    TTSDims,
    TTSLossOptions,
    durations_from_attention,
)
from pipeline.checkpoints import float_state_dict, lineage, load_checkpoint
from pipeline.data.manifests import BucketBatchSampler, Utterance, pad_sequences
from pipeline.frontend.features import FeatureStats
from pipeline.frontend.units import Frontend, frontend_for, frontend_from_dict
from pipeline.train.plots import save_attention_plot
from pipeline.train.tts_data import TTSCorpus, TTSDataConfig, phone_durations


@dataclass(frozen=True)
class ARTrainOptions:
    loss: TTSLossOptions = field(default_factory=TTSLossOptions)
    scheduled_sampling: float = 0.0  # rate of feeding back the model's own frames, after the ramp
    sampling_start: int = 4_000  # teacher forcing alone until here: let the alignment form first
    sampling_ramp: int = 4_000  # steps over which the rate grows from 0 to `scheduled_sampling`
    eval_generate: int = 8  # validation utterances synthesised free-running at each evaluation

    def __post_init__(self) -> None:
        if not 0 <= self.scheduled_sampling < 1:
            raise ValueError("scheduled_sampling must be in [0, 1)")
        if self.sampling_start < 0 or self.sampling_ramp < 1 or self.eval_generate < 0:
            raise ValueError("need sampling_start >= 0, sampling_ramp >= 1, eval_generate >= 0")

    def sampling_p(self, step: int) -> float:
        progress = min(max((step - self.sampling_start) / self.sampling_ramp, 0.0), 1.0)
        return self.scheduled_sampling * progress


def default_dims(units: str = "phones", **overrides) -> TTSDims:
    """TTSDims for the vocabulary of `units`, with `overrides` (None values ignored)."""
    vocab_size = len(frontend_for(units).vocab)
    return TTSDims(vocab_size=vocab_size, text_units=units,
                   **{k: v for k, v in overrides.items() if v is not None})


def boundary_error_ms(predicted: Tensor, reference: Tensor, frame_seconds: float) -> float:
    """Mean distance between corresponding token ends of two duration sequences (S,), in ms;
    the last end is the utterance's end in both, so it is left out."""
    gap = (predicted.cumsum(0)[:-1] - reference.cumsum(0)[:-1]).abs().float()
    return float(gap.mean()) * frame_seconds * 1000 if gap.numel() else 0.0


def _reference_durations(u: Utterance, tokens: Tensor, n_frames: int,
                          corpus: TTSCorpus) -> Tensor | None:
    """flite's phone durations of `u`, where they exist and match its tokens one to one."""
    if not u.phones or len(u.phones) != tokens.numel():
        return None
    return torch.tensor(phone_durations(u.phones, n_frames, corpus.features))


class TransformerTTSTask:
    """Tokens in, normalised log-mel and a stop flag out (pipeline.train.loop.TrainTask)."""

    def __init__(self, data: TTSDataConfig, dims: TTSDims,
                 options: ARTrainOptions = ARTrainOptions(), seed: int = 0, device: str = "cpu",
                 plot_dir: str | Path | None = None, init: dict | None = None):
        """`init`: a loaded "tts-ar" checkpoint whose weights start the model (`warm_start`)."""
        self.data, self.options, self.seed = data, options, seed
        self.device = torch.device(device)
        self.corpus = TTSCorpus(data)
        self.frontend = frontend_for(dims.text_units)
        if dims.vocab_size != len(self.frontend.vocab):
            raise ValueError(f"vocab_size {dims.vocab_size} is not the "
                             f"{len(self.frontend.vocab)} of {dims.text_units}")
        self.utterances = {u.id: u for u in self.corpus.utterances}
        self.tokens = {i: torch.tensor(self.frontend.encode_utterance(u))
                       for i, u in self.utterances.items()}
        self.model = TransformerTTS(dims)
        self.init_record = None  # what a warm-started model started from
        if init is not None:
            warm_start(self.model, init)
            self.init_record = lineage(init)
        lengths = [self.corpus.mels[u.id].size(0) for u in self.corpus.train]
        # short utterances first in epoch 0: the attention finds its alignment sooner
        self.sampler = BucketBatchSampler(lengths, data.max_batch_frames, seed=seed,
                                          shortest_first=True)
        self.plot_dir = Path(plot_dir) if plot_dir else None
        self.steps_done = 0

    def _collate(self, ids: list[str]) -> list[Tensor]:
        tokens, _ = pad_sequences([self.tokens[i] for i in ids], self.frontend.vocab.PAD)
        stats, mels = self.corpus.stats, self.corpus.mels
        mel, mel_lengths = pad_sequences([stats.normalize(mels[i].float()) for i in ids])
        return [t.to(self.device) for t in (tokens, mel, mel_lengths)]

    def batches(self, epoch: int):
        self.sampler.set_epoch(epoch)
        for batch in self.sampler:
            yield self._collate([self.corpus.train[i].id for i in batch])

    def loss(self, batch, step: int) -> dict[str, Tensor]:
        self.steps_done = step + 1
        p = self.options.sampling_p(step)
        losses = self.model.loss(*batch, options=self.options.loss, sampling_p=p)
        return {**losses, "sampling_p": torch.tensor(p)} if p > 0 else losses

    # ------------------------------------------------------------------ validation

    def evaluate(self) -> dict[str, float]:
        with torch.random.fork_rng():  # prenet dropout: the same draw at every evaluation
            torch.manual_seed(self.seed)
            metrics, first = self._teacher_forced([u.id for u in self.corpus.valid])
            chosen = self.corpus.valid[: self.options.eval_generate]
            free = self._free_running([u.id for u in chosen])
        metrics.update({k: v for k, v in free.items() if k != "weights"})
        self._plot("teacher", first)
        self._plot("free", free.get("weights"))
        # a model that cannot stop is worse than one with a slightly higher loss
        metrics["score"] = metrics["loss"] + metrics.get("cap_rate", 0.0)
        return metrics

    def _teacher_forced(self, ids: list[str]) -> tuple[dict[str, float], Tensor | None]:
        totals: dict[str, float] = {}
        errors: list[float] = []
        first = None
        for start in range(0, len(ids), 25):
            chunk = ids[start: start + 25]
            tokens, mel, mel_lengths = self._collate(chunk)
            out = self.model(tokens, mel, mel_lengths)
            for k, v in self.model.losses(out, mel, mel_lengths, self.options.loss).items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(chunk) / len(ids)
            weights = torch.cat(out.weights, dim=1)  # (B, L*H, steps, S)
            errors += self._boundary_errors(chunk, weights, out.memory_mask.sum(1), mel_lengths)
            if first is None:
                steps = -(-int(mel_lengths[0]) // self.model.dims.reduction)
                S = len(self.tokens[chunk[0]])
                first = torch.stack(out.weights, dim=1)[0, :, :, :steps, :S]  # (L, H, T, S)
        metrics = {k: round(v, 5) for k, v in totals.items()}
        if errors:
            metrics["boundary_error_ms"] = round(sum(errors) / len(errors), 2)
        return metrics, first

    def _boundary_errors(self, ids, weights, in_lengths, mel_lengths) -> list[float]:
        r = self.model.dims.reduction
        durations = durations_from_attention(weights, in_lengths, mel_lengths, r)
        errors = []
        for b, i in enumerate(ids):
            u, n_frames = self.utterances[i], int(mel_lengths[b])
            reference = _reference_durations(u, self.tokens[i], n_frames, self.corpus)
            if reference is not None:
                predicted = durations[b, : reference.numel()].cpu()
                frame_seconds = self.corpus.features.frame_seconds
                errors.append(boundary_error_ms(predicted, reference, frame_seconds))
        return errors

    def _free_running(self, ids: list[str]) -> dict:
        if not ids:
            return {}
        tokens, _, mel_lengths = self._collate(ids)
        results = self.model.generate(tokens, SynthesisOptions())
        n = len(results)
        ratio = sum(r.mel.size(0) / int(m) for r, m in zip(results, mel_lengths)) / n
        return {"cap_rate": sum(r.hit_length_cap for r in results) / n,
                "focus_rate": round(sum(r.focus_rate for r in results) / n, 4),
                "length_ratio": round(ratio, 4), "weights": results[0].weights}

    def _plot(self, name: str, weights: Tensor | None) -> None:
        if self.plot_dir is not None and weights is not None:
            title = f"step {self.steps_done}, {name}, {self.model.dims.cross_attention} attention"
            path = self.plot_dir / f"step-{self.steps_done:07d}-{name}.png"
            save_attention_plot(path, weights, title)

    def checkpoint(self) -> dict:
        return {
            "kind": "tts-ar",
            "dims": self.model.dims.to_dict(),
            "features": self.corpus.features.to_dict(),
            "stats": self.corpus.stats.to_dict(),
            "vocab": self.frontend.vocab.to_dict(),
            "frontend": self.frontend.units,
            "train_options": asdict(self.options),
            "data": self.corpus.describe(),
            **({"initialised_from": self.init_record} if self.init_record else {}),
        }


def warm_start(model: TransformerTTS, init: dict) -> None:
    """Load a "tts-ar" checkpoint's weights into `model`, which may use another cross-attention.

    `dot` and `monotonic` attention share their query, key/value and output projections, so a
    model trained with `dot` attention starts a `monotonic` one with only the stay bias fresh;
    a `location` one takes the value and output projections (its additive energy is new);
    cross-attention parameters the two variants do not share start fresh. Any other difference
    (width, layers, vocabulary) is an error.
    """
    state = _carried_projections(float_state_dict(init["state_dict"]), model.state_dict())
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    left_out = sorted(set(state) - set(fits)) + sorted(set(own) - set(fits))
    if any(".cross_attn." not in k for k in left_out):
        raise ValueError("the checkpoint does not fit this model: "
                         f"{[k for k in left_out if '.cross_attn.' not in k][:5]} differ")
    model.load_state_dict(fits, strict=False)


def _carried_projections(state: dict, own: dict) -> dict:
    """A dot model's fused key/value projection, split where the new attention has a value
    projection of its own (location-aware attention), so what the decoder reads stays the same."""
    state = dict(state)
    for name in list(state):
        if ".cross_attn.kv." not in name:
            continue
        value = name.replace(".cross_attn.kv.", ".cross_attn.value.")
        if value in own and value not in state:
            half = state[name].size(0) // 2  # (2D, D) rows: keys, then values
            if own[value].size(0) == half:
                state[value] = state[name][half:]
    return state


# ---------------------------------------------------------------------- AR -> NAT durations


def load_transformer_tts(ckpt: dict) -> TransformerTTS:
    """The model of a loaded "tts-ar" checkpoint, in float32."""
    model = TransformerTTS(TTSDims(**ckpt["dims"]))
    model.load_state_dict(float_state_dict(ckpt["state_dict"]))
    return model


@dataclass
class TeacherAlignment:
    frontend: Frontend
    examples: dict[str, tuple[Tensor, Tensor]]  # id -> (tokens (S,), durations (S,) in frames)
    teacher: str
    boundary_error_ms: float | None  # against flite's segmentation, where the manifest has it

    def describe(self) -> dict:
        return {"durations": "teacher-attention", "teacher": self.teacher,
                "teacher_boundary_error_ms": self.boundary_error_ms}


def _durations_cache(corpus: TTSCorpus, teacher: Path) -> Path:
    digest = hashlib.sha1(teacher.read_bytes()).hexdigest()[:10]
    manifest = Path(corpus.data.manifest)
    name = f"{manifest.stem}-{corpus.data.speaker}-durations-{digest}.pt"
    return manifest.parent / "features" / name


@torch.no_grad()
def teacher_alignment(teacher: str | Path, corpus: TTSCorpus, device: str = "cpu",
                      batch_frames: int = 8_000) -> TeacherAlignment:
    """Per-token durations of every corpus utterance from an autoregressive checkpoint's
    teacher-forced attention; cached beside the feature cache, keyed by the teacher's bytes."""
    teacher = Path(teacher)
    ckpt = load_checkpoint(teacher, kinds=("tts-ar",))
    if ckpt["features"] != corpus.features.to_dict():
        raise ValueError(f"{teacher} was trained on other features than this corpus has")
    frontend = frontend_from_dict(ckpt["vocab"])
    cache = _durations_cache(corpus, teacher)
    examples = torch.load(cache, weights_only=True) if cache.exists() else {}
    missing = [u for u in corpus.utterances if u.id not in examples]
    if missing:
        model = load_transformer_tts(ckpt).to(device).eval()
        stats = FeatureStats.from_dict(ckpt["stats"])
        examples.update(_align(model, frontend, stats, corpus, missing, device, batch_frames))
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(examples, cache.with_suffix(".tmp"))
        cache.with_suffix(".tmp").replace(cache)
    errors = []
    for u in corpus.utterances:
        tokens, durations = examples[u.id]
        reference = _reference_durations(u, tokens, int(durations.sum()), corpus)
        if reference is not None:
            errors.append(boundary_error_ms(durations, reference, corpus.features.frame_seconds))
    error = round(sum(errors) / len(errors), 2) if errors else None
    chosen = {u.id: examples[u.id] for u in corpus.utterances}
    return TeacherAlignment(frontend, chosen, str(teacher), error)


def _align(model: TransformerTTS, frontend: Frontend, stats: FeatureStats, corpus: TTSCorpus,
           utterances: list[Utterance], device: str,
           batch_frames: int) -> dict[str, tuple[Tensor, Tensor]]:
    lengths = [corpus.mels[u.id].size(0) for u in utterances]
    out = {}
    with torch.random.fork_rng():  # the prenet dropout the teacher was trained with, seeded
        torch.manual_seed(0)
        for batch in BucketBatchSampler(lengths, batch_frames, shuffle=False):
            chosen = [utterances[i] for i in batch]
            token_list = [torch.tensor(frontend.encode_utterance(u)) for u in chosen]
            tokens, _ = pad_sequences(token_list, frontend.vocab.PAD)
            mels = [stats.normalize(corpus.mels[u.id].float()) for u in chosen]
            mel, mel_lengths = pad_sequences(mels)
            tokens, mel, mel_lengths = tokens.to(device), mel.to(device), mel_lengths.to(device)
            result = model(tokens, mel, mel_lengths)
            weights = torch.cat(result.weights, dim=1)  # (B, L*H, steps, S)
            durations = durations_from_attention(weights, result.memory_mask.sum(1), mel_lengths,
                                                 model.dims.reduction).cpu()
            for b, u in enumerate(chosen):
                out[u.id] = (token_list[b], durations[b, : token_list[b].numel()].clone())
    return out
