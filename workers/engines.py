"""What a worker process does with a batch of jobs: check each input, run the model once for
the batch, write the outputs. The models load on first use, in the process that uses them.

Each job is checked on its own before the batch runs (text limits, the audio file, the storage
path), so one bad input fails only its own job. When a batch fails as a whole, its jobs are run
one at a time, so an input that only the model rejects fails alone too. A job cancelled while
its batch runs stops the model call (workers.cancellation); the others run again without it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.frontend.audio import AudioError, load_audio, probe
from pipeline.frontend.codecs import MEDIA_TYPES, SUFFIXES, encode, pcm16, resample
from pipeline.frontend.text import TextError, check_text
from pipeline.inference.options import RecognitionOptions, TTSOptions, with_overrides
from workers.cancellation import Cancelled, CancelWatch
from workers.settings import Settings
from workers.storage import StorageError, open_storage, output_ref

log = logging.getLogger(__name__)

# errors whose message is for the user: the job fails with it, nothing is retried
INPUT_ERRORS = (TextError, AudioError, StorageError, ValueError)


@dataclass
class Work:
    """One job inside a batch."""

    job_id: str
    request: dict
    inputs: Any = None  # what prepare() made of the request: text, or an (N,) waveform
    options: Any = None  # RecognitionOptions or TTSOptions; jobs run together when they match
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
        self.storage = open_storage(settings)
        self._models: dict[tuple, Any] = {}  # ("asr",) or ("tts", decoder, attention)
        self._redis = None  # for streamed jobs' parts (workers.parts), opened on first use

    def model(self, kind: str, options: TTSOptions | None = None):
        """The recogniser, or the synthesiser that `options` (decoder, attention) ask for."""
        options = options or TTSOptions()
        key = ("asr",) if kind == "asr" else ("tts", options.decoder, options.attention)
        if key not in self._models:
            if kind == "tts":
                from pipeline.inference.synthesizer import Synthesizer

                self._models[key] = Synthesizer.load(device=self.settings.device,
                                                     precision=self.settings.precision,
                                                     decoder=options.decoder,
                                                     attention=options.attention)
            else:
                cls = load_class(self.settings.recognizer)
                self._models[key] = cls.load(device=self.settings.device,
                                             precision=self.settings.precision)
            log.info("loaded the %s model on %s (%s)", "-".join(filter(None, key)),
                     self.settings.device,
                     getattr(self._models[key], "precision", self.settings.precision))
        return self._models[key]

    @property
    def loaded(self) -> list[str]:
        return sorted({key[0] for key in self._models})

    # ------------------------------------------------------------ cost, before claiming a batch

    def cost(self, kind: str, request: dict) -> float:
        """What a job adds to a batch: seconds of input audio (ASR) or characters (TTS)."""
        if kind == "tts":
            text = request.get("text")
            return float(len(text)) if isinstance(text, str) else 0.0
        try:
            # the object store downloads the file here and again in prepare(): the cost of
            # reading headers through the same interface as the audio
            with self.storage.local_path(request.get("audio", "")) as path:
                info = probe(path)
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
        work.options = with_overrides(TTSOptions(), _requested(work.request))
        self.model("tts", work.options).voice_index(work.options.voice)  # a voice it has

    def _prepare_asr(self, work: Work) -> None:
        model = self.model("asr")
        defaults = getattr(model, "default_options", RecognitionOptions())
        work.options = with_overrides(defaults, _requested(work.request))
        ref = work.request.get("audio", "")
        with self.storage.local_path(ref) as path:
            try:
                work.inputs = load_audio(path, model.sample_rate)
            except AudioError as e:  # name the file the user gave, not its copy in storage
                name = work.request.get("name") or str(ref)
                raise type(e)(str(e).replace(str(path), name)) from None
        work.audio_seconds = work.inputs.numel() / model.sample_rate

    # ------------------------------------------------------------ the batch

    def run(self, kind: str, works: list[Work], cancel: CancelWatch | None = None) -> None:
        """Run the prepared jobs (grouped by options); set each one's result or error. With
        `cancel`, a job cancelled meanwhile gets `extra["cancelled"]` and no result."""
        groups: dict[tuple, list[Work]] = {}
        for w in works:
            if w.ok:
                groups.setdefault(_group_key(kind, w), []).append(w)
        for group in groups.values():
            options = group[0].options
            try:
                self._run_until_done(kind, options, group, cancel)
            except INPUT_ERRORS + (RuntimeError,) as e:
                if len(group) == 1:
                    group[0].error = e
                    continue
                log.warning("a batch of %d %s jobs failed (%s); running them one by one",
                            len(group), kind, e)
                for w in group:
                    try:
                        self._run_until_done(kind, options, [w], cancel)
                    except INPUT_ERRORS + (RuntimeError,) as e1:
                        w.error = e1

    def _run_until_done(self, kind: str, options, group: list[Work],
                        cancel: CancelWatch | None) -> None:
        """One model call for the group's jobs that are not cancelled. A call stopped because
        some were cancelled runs again from the start for the others: a model call cannot drop
        rows part way (the padded batch, the beam search's state), and the rerun of the
        survivors costs no more than the stopped call had done."""
        while True:
            known = cancel.poll() if cancel is not None else set()
            for w in group:
                if w.job_id in known:
                    w.extra["cancelled"] = True
            group = [w for w in group if not w.extra.get("cancelled")]
            if not group:
                return
            should_stop = cancel.stop_for(w.job_id for w in group) if cancel is not None else None
            try:
                self._run_group(kind, options, group, should_stop)
                return
            except Cancelled as c:
                for w in group:
                    if w.job_id in c.job_ids:
                        w.extra["cancelled"] = True
                log.info("stopped a %s call of %d jobs: %s", kind, len(group), c)

    def _run_group(self, kind: str, options, group: list[Work], should_stop=None) -> None:
        if kind == "tts":
            outputs = self.model("tts", options).synthesize_batch(
                [w.inputs for w in group], speed=options.speed, voice=options.voice,
                on_sentence=self._part_publisher(group), should_stop=should_stop)
            for w, out in zip(group, outputs):
                w.extra["synthesis"] = out
                w.audio_seconds = out.duration
        else:
            transcripts = self.model("asr").transcribe_batch([w.inputs for w in group], options,
                                                             should_stop=should_stop)
            for w, t in zip(group, transcripts):
                w.extra["transcript"] = t

    def write(self, kind: str, work: Work) -> None:
        """Store one finished job's output and set its result."""
        if kind == "tts":
            out, options = work.extra.pop("synthesis"), work.options
            data = encode(out.wav.numpy(), out.sample_rate, options.format, options.sample_rate)
            try:
                ref = self.storage.put_bytes(output_ref(work.job_id, SUFFIXES[options.format]), data)
            except StorageError as e:  # the runner fails the job, "could not store the output"
                raise OSError(str(e)) from None
            work.result = {"audio": self.storage.location_of(ref), "audio_ref": ref,
                           "format": options.format, "media_type": MEDIA_TYPES[options.format],
                           "duration": round(out.duration, 4), "sample_rate": options.sample_rate,
                           "sentences": out.sentences}
        else:
            t = work.extra.pop("transcript")
            work.result = {**t.to_dict(), "audio_duration": round(work.audio_seconds, 4)}


    def _part_publisher(self, group: list[Work]):
        """The synthesiser's `on_sentence` for a group with streamed jobs (workers.parts): each
        sentence's audio at its job's rate, published as it is made; None when none streams."""
        if not any(w.request.get("stream") for w in group):
            return None
        from workers import parts
        from workers.jobs import connect

        if self._redis is None:
            self._redis = connect(self.settings.redis_url)

        def publish(i: int, j: int, count: int, wav) -> None:
            w = group[i]
            if w.request.get("stream"):
                rate = w.options.sample_rate
                audio = resample(wav.numpy(), self.model("tts", w.options).sample_rate, rate)
                parts.publish(self._redis, w.job_id, j, count, pcm16(audio), rate)
        return publish


def _group_key(kind: str, work: Work) -> tuple:
    """Jobs with equal keys run as one model call: those with the same options, except that a
    job adapted to its speaker runs alone (the adaptation learns from every input of a call)."""
    adapts = kind == "asr" and work.options.speaker_adapt_steps
    return (work.options, work.job_id) if adapts else (work.options,)


def _requested(request: dict) -> Mapping:
    """The options a job's client set."""
    options = request.get("options") or {}
    if not isinstance(options, Mapping):
        raise ValueError(f"a job's options are an object of names and values, not {options!r}")
    return options


def error_message(e: BaseException) -> str:
    return str(e) or type(e).__name__
