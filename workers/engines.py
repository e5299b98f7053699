"""What a worker process does with a batch of jobs: check each input, run the model once for
the batch, write the outputs. The models load on first use, in the process that uses them.

Each job is checked on its own before the batch runs (text limits, the audio file, the storage
path), so one bad input fails only its own job. When a batch fails as a whole, its jobs are run
one at a time, so an input that only the model rejects fails alone too.
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.frontend.audio import AudioError, load_audio, probe, save_wav
from pipeline.frontend.text import TextError, check_text
from workers.settings import (
    ASR_BEAM_SIZE,
    ASR_WEIGHTS,
    MAX_BEAM,
    MAX_SHIFT_VIEWS,
    MAX_SPEAKER_ADAPT_STEPS,
    Settings,
)
from workers.storage import Storage, StorageError

log = logging.getLogger(__name__)

# errors whose message is for the user: the job fails with it, nothing is retried
INPUT_ERRORS = (TextError, AudioError, StorageError, ValueError)
ASR_DECODERS = ("attention", "ctc")


@dataclass
class Work:
    """One job inside a batch."""

    job_id: str
    request: dict
    inputs: Any = None  # what prepare() made of the request: text, or an (N,) waveform
    options: tuple = ()  # jobs run together only when these match
    result: dict | None = None
    error: BaseException | None = None
    audio_seconds: float = 0.0  # input audio (ASR) or output audio (TTS), for monitoring
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def load_class(path: str):
    """'package.module:Class' -> the class."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class Engines:
    """The models of one worker process, each loaded the first time a job needs it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.storage = Storage(settings.storage_dir)
        self._models: dict[str, Any] = {}

    def model(self, kind: str):
        if kind not in self._models:
            if kind == "tts":
                from pipeline.inference.synthesizer import Synthesizer

                self._models[kind] = Synthesizer.load(device=self.settings.device,
                                                      precision=self.settings.precision)
            else:
                cls = load_class(self.settings.recognizer)
                self._models[kind] = cls.load(device=self.settings.device,
                                              precision=self.settings.precision)
            log.info("loaded the %s model on %s (%s)", kind, self.settings.device,
                     getattr(self._models[kind], "precision", self.settings.precision))
        return self._models[kind]

    @property
    def loaded(self) -> list[str]:
        return sorted(self._models)

    # ------------------------------------------------------------ cost, before claiming a batch

    def cost(self, kind: str, request: dict) -> float:
        """What a job adds to a batch: seconds of input audio (ASR) or characters (TTS)."""
        if kind == "tts":
            text = request.get("text")
            return float(len(text)) if isinstance(text, str) else 0.0
        try:
            info = probe(self.storage.resolve(request.get("audio", "")))
        except (StorageError, OSError):
            return 0.0
        return info.duration if info else 0.0

    # ------------------------------------------------------------ per job checks

    def prepare(self, kind: str, work: Work) -> None:
        """Check one job's input and load it; on bad input set `work.error`."""
        try:
            if kind == "tts":
                self._prepare_tts(work)
            else:
                self._prepare_asr(work)
        except INPUT_ERRORS as e:
            work.error = e

    def _prepare_tts(self, work: Work) -> None:
        work.inputs = check_text(work.request.get("text"), self.settings.max_text_chars)
        speed = work.request.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
            raise ValueError(f"speed must be a number from 0.25 to 4, not {speed!r}")
        work.options = (float(speed),)

    def _prepare_asr(self, work: Work) -> None:
        path = self.storage.resolve(work.request.get("audio", ""))
        model = self.model("asr")
        try:
            work.inputs = load_audio(path, model.sample_rate)
        except AudioError as e:  # name the file the user gave, not its copy in storage
            name = work.request.get("name")
            raise type(e)(str(e).replace(str(path), name) if name else str(e)) from None
        work.audio_seconds = work.inputs.numel() / model.sample_rate
        beam = work.request.get("beam_size", ASR_BEAM_SIZE)
        decoder = work.request.get("decoder", "attention")
        if not isinstance(beam, int) or not 1 <= beam <= MAX_BEAM:
            raise ValueError(f"beam_size must be an integer from 1 to {MAX_BEAM}, not {beam!r}")
        if decoder not in ASR_DECODERS:
            raise ValueError(f"decoder must be one of {ASR_DECODERS}, not {decoder!r}")
        work.options = (beam, decoder, asr_weights(work.request))

    # ------------------------------------------------------------ the batch

    def run(self, kind: str, works: list[Work]) -> None:
        """Run the prepared jobs (grouped by options); set each one's result or error."""
        groups: dict[tuple, list[Work]] = {}
        for w in works:
            if w.ok:
                groups.setdefault(_group_key(kind, w), []).append(w)
        for group in groups.values():
            options = group[0].options
            try:
                self._run_group(kind, options, group)
            except INPUT_ERRORS + (RuntimeError,) as e:
                if len(group) == 1:
                    group[0].error = e
                    continue
                log.warning("a batch of %d %s jobs failed (%s); running them one by one",
                            len(group), kind, e)
                for w in group:
                    try:
                        self._run_group(kind, options, [w])
                    except INPUT_ERRORS + (RuntimeError,) as e1:
                        w.error = e1

    def _run_group(self, kind: str, options: tuple, group: list[Work]) -> None:
        if kind == "tts":
            (speed,) = options
            outputs = self.model("tts").synthesize_batch([w.inputs for w in group], speed=speed)
            for w, out in zip(group, outputs):
                w.extra["synthesis"] = out
                w.audio_seconds = out.duration
        else:
            beam, decoder, weights = options
            transcripts = self.model("asr").transcribe_batch(
                [w.inputs for w in group], beam_size=beam, decoder=decoder, **dict(weights))
            for w, t in zip(group, transcripts):
                w.extra["transcript"] = t

    def write(self, kind: str, work: Work) -> None:
        """Store one finished job's output and set its result."""
        if kind == "tts":
            out = work.extra.pop("synthesis")
            path = save_wav(self.storage.output_path(work.job_id), out.wav, out.sample_rate)
            work.result = {"audio": str(path), "audio_ref": self.storage.ref(path),
                           "duration": round(out.duration, 4), "sample_rate": out.sample_rate,
                           "sentences": out.sentences}
        else:
            t = work.extra.pop("transcript")
            work.result = {**t.to_dict(), "audio_duration": round(work.audio_seconds, 4)}


def _group_key(kind: str, work: Work) -> tuple:
    """Jobs with equal keys run as one model call: those with the same options, except that a
    job adapted to its speaker runs alone (the adaptation learns from every input of a call)."""
    adapts = kind == "asr" and dict(work.options[2]).get("speaker_adapt_steps")
    return (work.options, work.job_id) if adapts else (work.options,)


# the ASR_WEIGHTS whose range is not "a number >= 0": name -> (check, what the error says)
_ASR_LIMITS = {
    "ctc_weight": (lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    "tempo": (lambda v: 0.5 <= v <= 2, "a number from 0.5 to 2"),
    "tempo_views": (lambda v: 0 <= v < 0.5, "a number from 0 to below 0.5"),
    "shift_views": (lambda v: isinstance(v, int) and 0 <= v <= MAX_SHIFT_VIEWS,
                    f"an integer from 0 to {MAX_SHIFT_VIEWS}"),
    "speaker_adapt_steps": (lambda v: isinstance(v, int) and 0 <= v <= MAX_SPEAKER_ADAPT_STEPS,
                            f"an integer from 0 to {MAX_SPEAKER_ADAPT_STEPS}"),
}
_ASR_INTEGERS = ("shift_views", "speaker_adapt_steps")  # RecognitionOptions' int fields


def asr_weights(request: dict) -> tuple[tuple[str, float | int], ...]:
    """The beam-search weights and views an ASR request sets, checked: (name, value) in
    ASR_WEIGHTS order."""
    weights = []
    for name in ASR_WEIGHTS:
        value = request.get(name)
        if value is None:
            continue
        check, limits = _ASR_LIMITS.get(name, (lambda v: v >= 0, "a number >= 0"))
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and check(value)):
            raise ValueError(f"{name} must be {limits}, not {value!r}")
        weights.append((name, value if name in _ASR_INTEGERS else float(value)))
    return tuple(weights)


def error_message(e: BaseException) -> str:
    return str(e) or type(e).__name__
