"""Every option of a job, declared once: one frozen dataclass per job kind, torch-free.

    options = RecognitionOptions(beam_size=4)       # checked: ValueError naming the field
    options = with_overrides(RecognitionOptions(), {"tempo": 1.0})    # a job's stored options
    for f in job_fields(TTSOptions): f.name, f.default, spec(f).help, spec(f).describe()

Each field carries its default, its legal range and a one-line help text (`option`). From this
declaration come the click flags of `speechq asr|tts` and `speechq submit|batch asr|tts`
(pipeline.cli.options), the gateway's request models and OpenAPI schema (workers.gateway),
`Client.submit_*`'s keywords and the worker's check of each job (workers.engines): adding an
option is one field here and its use where it acts. A job stores only the options its client
set; the worker fills in the rest from its model's defaults, and jobs whose options are equal
run as one batch (the dataclasses are frozen, so hashable). This module imports nothing heavy,
so clients and the gateway load it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, TypeVar

# speaker_adapt_steps that adapt well to one speaker's clips (docs/recipes.md)
SPEAKER_ADAPT_STEPS = 100
DECODERS = ("attention", "ctc")
TTS_DECODERS = ("nat", "ar")
TTS_ATTENTIONS = ("dot", "location", "monotonic")
# the shipped voices (the multi-speaker model's speakers, flite's voices without "flite-")
TTS_VOICES = ("slt", "awb", "rms", "kal16")
# kept in step with pipeline.frontend.codecs, which this torch- and numpy-free module cannot import
TTS_FORMATS = ("wav", "flac", "mp3", "opus", "aac", "pcm")
TTS_SAMPLE_RATES = (8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)
OPUS_SAMPLE_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)
MAX_HOTWORDS, MAX_HOTWORD_CHARS = 1_000, 100

Options = TypeVar("Options")


@dataclass(frozen=True)
class OptionSpec:
    """What a field may hold: numbers in [low, high] (or [low, high)), one of `choices`, or
    (kind tuple) a list of at most `max_items` strings, each of 1 to `max_chars` characters."""

    kind: type  # int, float, str, or tuple: a list of strings
    help: str
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    job: bool = True  # a job may set it (False: the worker's or the caller's choice alone)
    max_items: int | None = None
    max_chars: int | None = None

    def allows(self, value: Any) -> bool:
        if self.choices is not None:
            return value is None or value in self.choices
        if self.kind is tuple:
            return (isinstance(value, (list, tuple)) and len(value) <= self.max_items
                    and all(self._allows_item(v) for v in value))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and value < self.low:
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def _allows_item(self, item: Any) -> bool:
        return isinstance(item, str) and 0 < len(item.strip()) <= self.max_chars

    def shown(self, value: Any) -> str:
        """A refused value as its refusal names it: a list by its length or its first bad item."""
        if self.kind is tuple and isinstance(value, (list, tuple)):
            if len(value) > self.max_items:
                return f"{len(value)} of them"
            return repr(next(v for v in value if not self._allows_item(v)))
        return repr(value)

    def describe(self) -> str:
        """The legal values in words: "an integer from 1 to 16", "one of 'nat', 'ar'"."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind is tuple:
            return (f"a list of at most {self.max_items} strings, each of 1 to {self.max_chars} "
                    "characters")
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            upper = f"below {self.high:g}" if self.high_open else f"{self.high:g}"
            return f"{noun} from {self.low:g} to {upper}"
        if self.low is not None:
            return f"{noun} >= {self.low:g}"
        return noun


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           high_open: bool = False, choices: tuple[str, ...] | None = None,
           job: bool = True, max_items: int | None = None, max_chars: int | None = None) -> Any:
    """A dataclass field with its range and help text as metadata; a tuple default makes a
    list-of-strings option (`max_items`, `max_chars`)."""
    kind = str if choices is not None else type(default)
    if kind is tuple and (max_items is None or max_chars is None):
        raise TypeError("a list option needs max_items and max_chars")
    spec = OptionSpec(kind, help, low, high, high_open, choices, job, max_items, max_chars)
    return field(default=default, metadata={"spec": spec})


def spec(f: Field) -> OptionSpec:
    return f.metadata["spec"]


def job_fields(cls: type) -> list[Field]:
    """The fields a job (and so a flag, a query parameter, a client keyword) may set."""
    return [f for f in fields(cls) if spec(f).job]


def check_fields(options: Any) -> None:
    """ValueError naming the first field whose value is outside its range; whole numbers given
    for a float field are stored as floats and lists as tuples, so equal options compare and
    hash equal (a job's stored options are JSON, where a tuple is a list)."""
    for f in fields(options):
        value, s = getattr(options, f.name), spec(f)
        if not s.allows(value):
            raise ValueError(f"{f.name} must be {s.describe()}, not {s.shown(value)}")
        if s.kind is float and isinstance(value, int):
            object.__setattr__(options, f.name, float(value))
        if s.kind is tuple and isinstance(value, list):
            object.__setattr__(options, f.name, tuple(value))


def with_overrides(base: Options, requested: Mapping[str, Any]) -> Options:
    """`base` with a job's options set: names it may not set are refused with a ValueError,
    None means "the default", and every value is checked."""
    allowed = {f.name for f in job_fields(type(base))}
    unknown = sorted(set(requested) - allowed)
    if unknown:
        raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                         f"choose from {', '.join(sorted(allowed))}")
    return replace(base, **{k: v for k, v in requested.items() if v is not None})


def requested(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a client set (None: left to the worker), checked against `cls`'s defaults;
    a list option as a list, as its JSON is read back."""
    chosen = {k: list(v) if isinstance(v, tuple) else v
              for k, v in options.items() if v is not None}
    with_overrides(cls(), chosen)
    return chosen


def default_of(f: Field) -> Any:
    return f.default if f.default is not MISSING else None


@dataclass(frozen=True)
class RecognitionOptions:
    """How an ASR job is decoded (pipeline.inference.recognizer, pipeline.inference.decoding)."""

    decoder: str = option("attention", "joint CTC/attention beam search, or greedy CTC (fast)",
                          choices=DECODERS)
    beam_size: int = option(16, "hypotheses kept at each step of beam search", low=1, high=16)
    ctc_weight: float = option(0.3, "weight of the CTC prefix score in joint decoding",
                               low=0, high=1)
    # the language models' and the word list's weights count where the recogniser has them
    lm_weight: float = option(0.1, "weight of the subword language model", low=0, high=10)
    lexicon_weight: float = option(10.0, "cost of a word outside the word list", low=0, high=100)
    rare_word_weight: float = option(3.0, "cost of a rare word of the list (one the training "
                                          "text lacks)", low=0, high=100)
    word_lm_weight: float = option(0.3, "weight of the word n-gram model", low=0, high=10)
    word_bonus: float = option(2.0, "added to each ended word's n-gram log-probability (a word "
                                    "insertion bonus)", low=-20, high=20)
    # the words a clip is likely to hold (names, terms), favoured by the beam search
    # (models.biasing): each normalised as the transcript spells words, matched as whole words
    hotwords: tuple[str, ...] = option((), "words or phrases to favour (names, terms); only "
                                           "whole ones count", max_items=MAX_HOTWORDS,
                                       max_chars=MAX_HOTWORD_CHARS)
    # a job's hotwords join its word list, but a name must still outbid the word LM's cost of
    # an unknown word; too much bonus inserts hotwords the audio lacks (docs/BENCHMARKS.md,
    # "Hotwords")
    hotword_weight: float = option(4.0, "bonus per token of a whole hotword the hypothesis "
                                        "spells, after its first", low=0, high=20)
    length_bonus: float = option(0.0, "added to a hypothesis's score per token", low=-10, high=10)
    length_penalty: float = option(1.0, "exponent of the length that scores are normalised by",
                                   low=0, high=2)
    pre_beam_ratio: float = option(1.5, "CTC scores the best ratio x beam tokens of each "
                                        "hypothesis; 0: all", low=0, high=100)
    # the synthetic training clips all end in a pause, and without one the recogniser drops a
    # final consonant of a piece cut off in speech
    end_silence_seconds: float = option(0.2, "pause appended to a piece that ends in speech",
                                        low=0, high=2)
    # real recordings are often trimmed to the word, while every synthetic training clip starts
    # with a pause: without one the onset of the first word is lost
    initial_silence_seconds: float = option(0.0, "pause prepended to a piece that starts in "
                                                 "speech", low=0, high=2)
    # each view is another encoder pass and a decoder and CTC scorer more per step
    tempo_views: float = option(0.05, "also hear the audio at tempo 1 - t and 1 + t and score the "
                                      "views together; 0: not", low=0, high=0.5, high_open=True)
    shift_views: int = option(1, "views that start a fraction of an encoder step later; 0 with "
                                 "tempo_views 0: one pass", low=0, high=3)
    # slowed, each encoder frame hears less of a word (docs/BENCHMARKS.md, "Slowed input")
    tempo: float = option(0.9, "hear the audio at this tempo (below 1: slower); word times stay "
                               "the audio's own", low=0.5, high=2)
    r2l_weight: float = option(0.3, "weight of the right-to-left decoder when it rescores the "
                                    "beam's hypotheses, where the model has one; 0: not",
                               low=0, high=10)
    speaker_adapt_steps: int = option(0, "take the inputs as one speaker: decode, adapt the "
                                         "encoder to that voice with this many steps, decode again "
                                         f"({SPEAKER_ADAPT_STEPS} adapts well); 0: not",
                                      low=0, high=500)
    speaker_adapt_lr: float = option(1e-3, "learning rate of speaker adaptation", low=0,
                                     high=0.1)
    # what the worker's memory and the splitting of long audio allow, not a job's choice
    max_segment_seconds: float = option(20.0, "longest piece long audio is split into at pauses",
                                        low=1, high=30, job=False)
    batch_frames: int = option(4_000, "padded 10 ms frames of the pieces decoded together",
                               low=1, job=False)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.speaker_adapt_steps and self.speaker_adapt_lr <= 0:
            raise ValueError("speaker_adapt_lr must be above 0 when speaker_adapt_steps is set")
        if self.hotwords and self.decoder == "ctc":
            raise ValueError("hotwords need decoder 'attention': greedy CTC takes each frame's "
                             "best unit and has no search to bias")


@dataclass(frozen=True)
class TTSOptions:
    """How a TTS job is synthesised (pipeline.inference.synthesizer)."""

    decoder: str = option("nat", "non-autoregressive (duration predictor) or autoregressive "
                                 "(attention) acoustic model", choices=TTS_DECODERS)
    attention: str | None = option(None, "with decoder ar: the shipped model trained with this "
                                         "cross-attention (default: monotonic)",
                                   choices=TTS_ATTENTIONS)
    speed: float = option(1.0, "speaking rate (decoder nat)", low=0.25, high=4)
    voice: str | None = option(None, "the voice (decoder nat; default: the model's first, "
                                     "slt)", choices=TTS_VOICES)
    format: str = option("wav", "audio format: wav (16-bit), flac, mp3, opus (in Ogg), aac "
                                "(ADTS) or pcm (raw 16-bit little-endian mono)",
                         choices=TTS_FORMATS)
    sample_rate: int = option(16_000, "sample rate of the audio in Hz: "
                                      + ", ".join(map(str, TTS_SAMPLE_RATES)),
                              low=TTS_SAMPLE_RATES[0], high=TTS_SAMPLE_RATES[-1])

    def __post_init__(self) -> None:
        check_fields(self)
        if self.sample_rate not in TTS_SAMPLE_RATES:
            raise ValueError("sample_rate must be one of "
                             + ", ".join(map(str, TTS_SAMPLE_RATES)) + f", not {self.sample_rate}")
        if self.format == "opus" and self.sample_rate not in OPUS_SAMPLE_RATES:
            raise ValueError("format opus runs at sample_rate "
                             + ", ".join(map(str, OPUS_SAMPLE_RATES)) + f", not {self.sample_rate}")
        if self.voice not in (None, TTS_VOICES[0]) and self.decoder != "nat":
            raise ValueError("voice needs decoder 'nat' (the autoregressive models speak slt only)")
        if self.attention is not None and self.decoder != "ar":
            raise ValueError("attention applies to decoder 'ar'")
        if self.speed != 1 and self.decoder != "nat":
            raise ValueError("speed control needs decoder 'nat' (the autoregressive model "
                             "decides its own durations)")


JOB_OPTIONS = {"asr": RecognitionOptions, "tts": TTSOptions}
