"""`Synthesizer`: text -> waveform with a trained TTS checkpoint and Griffin-Lim.

    synth = Synthesizer.load()                       # the shipped non-autoregressive model
    synth = Synthesizer.load(decoder="ar")           # the shipped autoregressive one
    result = synth.synthesize("The birch canoe slid on the smooth planks.", voice="awb")
    save_wav("out.wav", result.wav, result.sample_rate)

Each kind of model sits behind one small mel-generator class (`NATMelGenerator`,
`ARMelGenerator`) with the same `generate`; the synthesizer does the text, the batching of
sentences and the vocoder. Long text is split into sentences, synthesised as one batch and
joined with short pauses; with `on_sentence`, the k-th sentences of all texts are made
together, round after round, and each one's audio is handed over as soon as it is vocoded (a
stream's first audio need not wait for its last sentence). A multi-speaker checkpoint names its
voices (`voices`); a single-speaker one has the one voice it was trained on. A call's
`should_stop` is asked before each round, before every step of the autoregressive decoder and
before each sentence's vocoding; when it says so the call ends with `models.decoding.Stopped`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.decoding import stop_if
from models.fastspeech import FastSpeech, FastSpeechDims
from models.tts import SynthesisOptions, TransformerTTS, TTSDims
from pipeline.checkpoints import (
    checkpoint_dir,
    default_checkpoint,
    float_state_dict,
    load_checkpoint,
)
from pipeline.frontend.features import FeatureConfig, FeatureStats, GriffinLim
from pipeline.frontend.text import check_text, split_sentences
from pipeline.frontend.units import frontend_from_dict
from pipeline.inference.precision import autocast, resolve_precision

SENTENCE_PAUSE_SECONDS = 0.2
SentenceCallback = Callable[[int, int, int, Tensor], None]


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


@dataclass
class MelResult:
    mel: Tensor  # (T, n_mels) log-mel
    hit_length_cap: bool = False
    focus_rate: float | None = None


class NATMelGenerator:
    """FastSpeech: predicted durations fix the length, so nothing can fail to stop."""

    kind = "tts-nat"

    def __init__(self, model: FastSpeech):
        self.model = model

    @classmethod
    def from_checkpoint(cls, ckpt: dict,
                        options: SynthesisOptions | None = None) -> "NATMelGenerator":
        if options is not None:
            raise ValueError("synthesis options apply to the autoregressive model only")
        model = FastSpeech(FastSpeechDims(**ckpt["dims"]))
        model.load_state_dict(float_state_dict(ckpt["state_dict"]))
        return cls(model)

    def generate(self, tokens: Tensor, speed: float = 1.0, speaker: int = 0,
                 should_stop: Callable[[], bool] | None = None) -> list[MelResult]:
        """tokens (B, S) padded -> one normalised mel per item, all in voice `speaker`, in one
        forward pass (nothing to stop part way)."""
        speakers = tokens.new_full((tokens.size(0),), speaker) if speaker else None
        out = self.model(tokens, speed=speed, speakers=speakers)
        return [MelResult(out.mel[i, : out.mel_lengths[i]]) for i in range(tokens.size(0))]


class ARMelGenerator:
    """Transformer-TTS: batched incremental decoding, each item stopping on its own."""

    kind = "tts-ar"

    def __init__(self, model: TransformerTTS, options: SynthesisOptions | None = None):
        self.model, self.options = model, options or SynthesisOptions()

    @classmethod
    def from_checkpoint(cls, ckpt: dict,
                        options: SynthesisOptions | None = None) -> "ARMelGenerator":
        model = TransformerTTS(TTSDims(**ckpt["dims"]))
        model.load_state_dict(float_state_dict(ckpt["state_dict"]))
        return cls(model, options)

    def generate(self, tokens: Tensor, speed: float = 1.0, speaker: int = 0,
                 should_stop: Callable[[], bool] | None = None) -> list[MelResult]:
        if speed != 1.0:
            raise ValueError("speed control needs the non-autoregressive model (--decoder nat)")
        if speaker:
            raise ValueError("the autoregressive model has one voice")
        return [MelResult(r.mel, r.hit_length_cap, r.focus_rate)
                for r in self.model.generate(tokens, self.options, should_stop)]


GENERATORS = {"nat": NATMelGenerator, "ar": ARMelGenerator}


def checkpoint_voices(ckpt: dict) -> list[str]:
    """A TTS checkpoint's voices: a multi-speaker model's speakers, or the one it learnt."""
    speakers = ckpt.get("speakers") or [(ckpt.get("data") or {}).get("speaker") or "flite-slt"]
    return [s.removeprefix("flite-") for s in speakers]


def voice_records(ckpt: dict) -> list[dict]:
    """Each voice with what bench/tts_quality.py measured of it, where the checkpoint has it
    (`speechq export --scores`): PocketSphinx's WER on its audio and on the teacher voice's own
    recordings, our recogniser's WER, the real-time factor."""
    measured = (ckpt.get("scores") or {}).get("voices") or {}
    keys = ("pocketsphinx_wer", "teacher_pocketsphinx_wer", "our_asr_wer", "rtf")
    return [{"voice": v, **{k: (measured.get(v) or {}).get(k) for k in keys}}
            for v in checkpoint_voices(ckpt)]
MelGenerator = NATMelGenerator | ARMelGenerator


class Synthesizer:
    def __init__(self, generator: MelGenerator, checkpoint: dict, device: str = "cpu",
                 griffin_lim_iters: int = 32, precision: str = "fp32"):
        """`precision` of the acoustic model: "fp32", or "bf16"/"fp16" autocast
        (pipeline.inference.precision); Griffin-Lim always runs in float32."""
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.generator = generator
        self.model = generator.model.to(self.device).eval()
        self.checkpoint_info = {k: checkpoint.get(k) for k in ("kind", "data", "metrics")}
        self.features = FeatureConfig.from_dict(checkpoint["features"])
        self.stats = FeatureStats.from_dict(checkpoint["stats"])
        self.frontend = frontend_from_dict(checkpoint["vocab"])
        self.voices = checkpoint_voices(checkpoint)
        self.vocoder = GriffinLim(self.features, n_iter=griffin_lim_iters).to(self.device)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str = "cpu",
             griffin_lim_iters: int = 32, *, decoder: str | None = None,
             attention: str | None = None, options: SynthesisOptions | None = None,
             precision: str = "fp32") -> "Synthesizer":
        """`decoder` "ar" or "nat" picks the shipped model and checks a given checkpoint's kind;
        None takes whichever kind `path` holds (the shipped NAT model without a path).
        `attention`, with decoder "ar" and no `path`: the shipped model trained with it."""
        if decoder is not None and decoder not in GENERATORS:
            raise ValueError(f"decoder must be one of {sorted(GENERATORS)}, not {decoder!r}")
        if attention is not None and decoder != "ar":
            raise ValueError("attention applies to decoder 'ar'")
        kinds = tuple(g.kind for name, g in GENERATORS.items() if decoder in (None, name))
        shipped = (checkpoint_dir() / f"tts-ar-{attention}.pt" if attention is not None
                   else default_checkpoint(f"tts-{decoder or 'nat'}"))
        ckpt = load_checkpoint(path or shipped, kinds=kinds)
        generator = next(g for g in GENERATORS.values() if g.kind == ckpt["kind"])
        return cls(generator.from_checkpoint(ckpt, options), ckpt, device, griffin_lim_iters, precision)

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    def voice_index(self, voice: str | None) -> int:
        """A voice's speaker index (None: the first voice); ValueError naming the voices."""
        if voice is None:
            return 0
        if voice not in self.voices:
            raise ValueError(f"voice must be one of {', '.join(self.voices)} for this model, "
                             f"not {voice!r}")
        return self.voices.index(voice)

    @torch.no_grad()
    def generate_mels(self, sentences: list[str], speed: float = 1.0,
                      voice: str | None = None,
                      should_stop: Callable[[], bool] | None = None) -> list[MelResult]:
        """One (T, n_mels) log-mel per sentence, generated as one padded batch."""
        speaker = self.voice_index(voice)
        tokens = [torch.tensor(self.frontend.encode(s)) for s in sentences]
        batch = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True,
                                                padding_value=self.frontend.vocab.PAD)
        with autocast(self.device, self.precision):
            results = self.generator.generate(batch.to(self.device), speed, speaker,
                                              should_stop)
        for r in results:
            r.mel = self.stats.denormalize(r.mel.float())
        return results

    def mels(self, sentences: list[str], speed: float = 1.0, voice: str | None = None) -> list[Tensor]:
        return [r.mel for r in self.generate_mels(sentences, speed, voice)]

    def synthesize(self, text: str, speed: float = 1.0, voice: str | None = None,
                   should_stop: Callable[[], bool] | None = None) -> SynthesisResult:
        return self.synthesize_batch([text], speed, voice, should_stop=should_stop)[0]

    def synthesize_batch(self, texts: list[str], speed: float = 1.0, voice: str | None = None,
                         on_sentence: SentenceCallback | None = None,
                         should_stop: Callable[[], bool] | None = None) -> list[SynthesisResult]:
        """Every text is checked first, so one bad text fails before any work is done.
        `on_sentence(text index, sentence index, sentences in the text, wav (N,))` hears each
        sentence's audio (the pause before it included) as soon as it is made. `should_stop()`,
        asked between steps and sentences, ends the call with `Stopped` when it returns True (an
        exception it raises ends the call too)."""
        texts = [check_text(t) for t in texts]
        self.voice_index(voice)
        per_text = [split_sentences(t) for t in texts]
        pause = torch.zeros(int(SENTENCE_PAUSE_SECONDS * self.sample_rate))
        parts: list[list[MelResult]] = [[] for _ in texts]
        wavs: list[list[Tensor]] = [[] for _ in texts]
        rounds = max(map(len, per_text)) if on_sentence is not None else 1
        for k in range(rounds):  # one round: the k-th sentences, or without a listener all
            chosen = [(i, j) for i, sentences in enumerate(per_text) for j in range(len(sentences))
                      if on_sentence is None or j == k]
            stop_if(should_stop)
            mels = self.generate_mels([per_text[i][j] for i, j in chosen], speed, voice,
                                      should_stop)
            for (i, j), mel in zip(chosen, mels):
                stop_if(should_stop)
                wav = self.vocoder(mel.mel.to(self.device)).cpu()
                parts[i].append(mel)
                wavs[i].append(wav)
                if on_sentence is not None:
                    on_sentence(i, j, len(per_text[i]), torch.cat([pause, wav]) if j else wav)
        results = []
        for text, sentences, parts, wavs in zip(texts, per_text, parts, wavs):
            joined = [x for i, wav in enumerate(wavs) for x in ([pause, wav] if i else [wav])]
            focus = [p.focus_rate for p in parts if p.focus_rate is not None]
            results.append(SynthesisResult(
                text, torch.cat(joined), self.sample_rate,
                hit_length_cap=any(p.hit_length_cap for p in parts),
                focus_rate=sum(focus) / len(focus) if focus else None, sentences=sentences,
            ))
        return results
