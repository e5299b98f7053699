"""`Recognizer`: audio -> text with word timestamps and confidences.

    rec = Recognizer.load()                   # the shipped ASR checkpoint
    transcript = rec.transcribe("clip.wav")   # joint CTC/attention beam search, beam 16
    print(transcript.text, transcript.words[0])

Long audio is split at pauses into pieces of at most 20 s, decoded in batches and joined.
The beam search fuses a subword language model (models.lm) where one fits the model's units,
by default the shipped `checkpoints/lm.pt`, and a word list as a soft lexicon constraint
(models.lexicon), by default `checkpoints/lexicon.txt`: a word outside it costs `lexicon_weight`,
one of its rare words (a dictionary's, never in the training text) `rare_word_weight`; and a
word n-gram model at word ends (models.wordlm), by default pocketsphinx's general-English
trigram model (pipeline.inference.wordlm), `word_lm_weight` times each word's log-probability.
A call's `hotwords` (names, terms) are favoured by the search too, `hotword_weight` per token of
each whole one it spells (models.biasing, spelled in the model's units by `DecodingTask`).
The options of a call are `RecognitionOptions` (pipeline.inference.options); the views, the
scorers and right-to-left rescoring they ask for are assembled by `DecodingTask`
(pipeline.inference.decoding). Every piece is heard at `tempo` first, then in its views.
With `speaker_adapt_steps`, the call's inputs are taken as one speaker: after a first pass, the
encoder's LayerNorms are adapted to that voice on the first pass's transcripts (unsupervised
speaker adaptation, models.adaptation), the pieces are decoded again, and the model is restored.
Word timing and confidence come from a CTC forced alignment of the chosen hypothesis
(torchaudio.functional.forced_align); confidence is the mean frame posterior of a word's tokens.
A call's `should_stop` is asked between batches of pieces and before every search step; when
it says so the call ends with `models.decoding.Stopped`, so a cancelled job stops within a step.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torchaudio.functional as AF
from torch import Tensor

from models.adaptation import layer_norms_adapted
from models.asr import ASRDims, ConvSubsampling, SpeechTransformer
from models.decoding import stop_if
from models.lexicon import Lexicon, LexiconScorer
from models.lm import RNNLM, LMDims
from models.wordlm import WordLM, WordLMScorer
from pipeline.checkpoints import (
    CheckpointError,
    default_checkpoint,
    float_state_dict,
    load_checkpoint,
)
from pipeline.data.lexicon import read_lexicon
from pipeline.data.manifests import pad_sequences
from pipeline.frontend.audio import AudioLimits, EmptyAudioError, load_audio
from pipeline.frontend.features import FeatureConfig, FeatureStats, LogMel, stretch
from pipeline.frontend.tokenizer import SubwordTokenizer
from pipeline.inference.decoding import DecodingTask, Encoded
from pipeline.inference.options import RecognitionOptions
from pipeline.inference.precision import autocast, resolve_precision
from pipeline.inference.vad import end_padding, split_on_pauses
from pipeline.inference.wordlm import WordLMError, load_word_lm, pocketsphinx_lm_path

_ADAPT_BATCH = 16  # pieces per speaker-adaptation step


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float


@dataclass
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    duration: float = 0.0  # seconds of audio

    def to_dict(self) -> dict:
        return asdict(self)


class Recognizer:
    default_options = RecognitionOptions()  # what a call or a job leaves out

    def __init__(self, model: SpeechTransformer, checkpoint: dict, device: str = "cpu",
                 precision: str = "fp32", lm: RNNLM | None = None, lexicon: Lexicon | None = None,
                 word_lm: WordLM | None = None):
        """`precision`: "fp32", or "bf16"/"fp16" autocast (pipeline.inference.precision). `lm`: a language
        model over the same units, fused into beam search with `lm_weight`; `lexicon`: words,
        each word outside it costing `lexicon_weight`; `word_lm`: a word n-gram model, fused with
        `word_lm_weight`."""
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.lm = lm.to(self.device).eval() if lm is not None else None
        self.features = FeatureConfig.from_dict(checkpoint["features"])
        self.stats = FeatureStats.from_dict(checkpoint["stats"])
        self.tokenizer = SubwordTokenizer.from_dict(checkpoint["tokenizer"])
        self._lexicon_scorer = (LexiconScorer(lexicon, self.tokenizer.pieces(), model.dims.eos)
                                if lexicon is not None else None)
        self._word_lm_scorer = (WordLMScorer(word_lm, self.tokenizer.pieces(), model.dims.eos)
                                if word_lm is not None else None)
        self.logmel = LogMel(self.features).to(self.device)
        self.checkpoint_info = {k: checkpoint.get(k) for k in ("kind", "data", "metrics")}
        self.frame_seconds = self.features.frame_seconds * model.dims.subsampling

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str = "cpu",
             precision: str = "fp32", lm: str | os.PathLike | bool | None = None,
             lexicon: str | os.PathLike | bool | None = None,
             word_lm: str | os.PathLike | bool | None = None) -> "Recognizer":
        """`lm`: an LM checkpoint over the model's units; None takes the shipped LM where its
        units are the model's (the shipped recogniser and models fine-tuned from it), False none.
        `lexicon`: a word list (pipeline.data.lexicon); None the shipped one if there is one, False none.
        `word_lm`: an ARPA or Sphinx binary n-gram file; None pocketsphinx's English model where
        pocketsphinx is installed, False none."""
        ckpt = load_checkpoint(path or default_checkpoint("asr"), kinds=("asr",))
        model = SpeechTransformer(ASRDims(**ckpt["dims"]))
        model.load_state_dict(float_state_dict(ckpt["state_dict"]))
        lm_model, lm_path = _load_lm(lm, ckpt)
        lexicon_path = _lexicon_path(lexicon)
        words = read_lexicon(lexicon_path) if lexicon_path else None
        word_lm_path = _word_lm_path(word_lm)
        word_model = load_word_lm(word_lm_path) if word_lm_path else None
        recognizer = cls(model, ckpt, device, precision, lm_model, words, word_model)
        recognizer.checkpoint_info["lm"] = lm_path and str(lm_path)
        recognizer.checkpoint_info["lexicon"] = lexicon_path and str(lexicon_path)
        recognizer.checkpoint_info["word_lm"] = word_lm_path and str(word_lm_path)
        return recognizer

    @property
    def lexicon(self) -> Lexicon | None:
        return self._lexicon_scorer.lexicon if self._lexicon_scorer is not None else None

    @property
    def word_lm(self) -> WordLM | None:
        return self._word_lm_scorer.lm if self._word_lm_scorer is not None else None

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    def load_audio(self, audio: str | os.PathLike | Tensor, limits: AudioLimits = AudioLimits()) -> Tensor:
        if isinstance(audio, Tensor):
            if audio.numel() == 0:  # files are checked by load_audio; a waveform here
                raise EmptyAudioError("the waveform holds no audio samples")
            return audio.float().flatten()
        return load_audio(Path(audio), self.sample_rate, limits)

    def transcribe(self, audio: str | os.PathLike | Tensor,
                   options: RecognitionOptions | None = None,
                   should_stop: Callable[[], bool] | None = None, **overrides) -> Transcript:
        return self.transcribe_batch([audio], options, should_stop, **overrides)[0]

    @torch.no_grad()
    def transcribe_batch(self, audios: list, options: RecognitionOptions | None = None,
                         should_stop: Callable[[], bool] | None = None,
                         **overrides) -> list[Transcript]:
        """Transcribe files or (N,) waveforms at `sample_rate`: with `options`, or the defaults,
        with `overrides` (RecognitionOptions fields) replaced. `should_stop()`, asked between
        steps, ends the call with `Stopped` when it returns True (an exception it raises ends
        the call too)."""
        opts = replace(options or self.default_options, **overrides)
        wavs = [self.load_audio(a) for a in audios]
        pieces = []  # (input index, start sample, waveform)
        for i, wav in enumerate(wavs):
            for start, end in split_on_pauses(wav, self.sample_rate, opts.max_segment_seconds):
                pieces.append((i, start, wav[start:end]))
        padded = [self._in_silence(p[2], opts) for p in pieces]  # (waveform, seconds before)
        feats = [self._features(wav) for wav, _ in padded]
        if opts.tempo != 1:
            feats = [stretch(f, opts.tempo) for f in feats]
        decoded = self._decode_pieces(feats, opts, should_stop)
        if opts.speaker_adapt_steps:
            with self._adapted_to_speaker(feats, [text for text, _ in decoded], opts):
                decoded = self._decode_pieces(feats, opts, should_stop)
        transcripts = [Transcript("", [], w.numel() / self.sample_rate) for w in wavs]
        for (i, start, piece), (_, lead), (text, words) in zip(pieces, padded, decoded):
            begin = start / self.sample_rate
            end = begin + piece.numel() / self.sample_rate  # not in the added silence

            def at(seconds: float) -> float:
                return round(min(max(seconds * opts.tempo - lead + begin, begin), end), 3)

            t = transcripts[i]
            t.text = f"{t.text} {text}".strip()
            t.words += [Word(w.word, at(w.start), at(w.end), w.confidence) for w in words]
        return transcripts

    def _in_silence(self, wav: Tensor, opts: RecognitionOptions) -> tuple[Tensor, float]:
        """`wav` with a pause of `opts.initial_silence_seconds` before it if it starts in speech
        and of `opts.end_silence_seconds` after it if it ends in speech (the clip's own
        background where it has one), and the seconds put before it."""
        if wav.numel() == 0:
            return wav, 0.0
        before = after = wav.new_zeros(0)
        if opts.initial_silence_seconds:
            before = end_padding(wav.flip(0), self.sample_rate, opts.initial_silence_seconds)
        if opts.end_silence_seconds:
            after = end_padding(wav, self.sample_rate, opts.end_silence_seconds)
        return torch.cat([before, wav, after]), before.numel() / self.sample_rate

    def _features(self, wav: Tensor) -> Tensor:
        mel, _ = self.logmel(wav.to(self.device))
        return self.stats.normalize(mel[0])

    def _long_enough(self, x: Tensor) -> Tensor:
        """Normalised features padded with the mean to the fewest frames the encoder takes: a
        too-short clip still decodes."""
        shortest = ConvSubsampling.min_input_frames(self.model.dims.subsampling)
        return torch.nn.functional.pad(x, (0, 0, 0, shortest - x.size(0))) if x.size(0) < shortest else x

    def _decode_pieces(self, feats: list[Tensor], opts: RecognitionOptions,
                       should_stop: Callable[[], bool] | None = None
                       ) -> list[tuple[str, list[Word]]]:
        """Normalised (T, n_mels) features -> (text, words) for each, decoded in batches."""
        order = sorted(range(len(feats)), key=lambda i: feats[i].size(0))
        results: list = [None] * len(feats)
        batch: list[int] = []
        for i in order + [None]:
            if i is not None and (not batch or feats[i].size(0) * (len(batch) + 1) <= opts.batch_frames):
                batch.append(i)
                continue
            if batch:
                stop_if(should_stop)
                decoded = self._decode_batch([feats[j] for j in batch], opts, should_stop)
                for j, r in zip(batch, decoded):
                    results[j] = r
            batch = [i] if i is not None else []
        return results

    def _adapted_to_speaker(self, feats: list[Tensor], texts: list[str], opts: RecognitionOptions):
        """A context in which the encoder's LayerNorms are adapted to the voice of `feats`
        (normalised features), taking `texts`, the first pass's transcripts, as their labels:
        minibatches of `_ADAPT_BATCH` pieces drawn with a fixed seed, the training loss."""
        examples = [(self._long_enough(f), torch.tensor(ids)) for f, text in zip(feats, texts)
                    if (ids := self.tokenizer.encode(text))]
        if not examples:  # nothing was heard: nothing to adapt to
            return nullcontext()
        draw = random.Random(0)

        def loss() -> Tensor:
            batch = draw.sample(examples, min(_ADAPT_BATCH, len(examples)))
            x, x_lengths = pad_sequences([x for x, _ in batch])
            y, y_lengths = pad_sequences([y for _, y in batch])
            tensors = (t.to(self.device) for t in (x, x_lengths, y, y_lengths))
            return self.model.loss(*tensors)["loss"]

        return layer_norms_adapted(self.model, self.model.encoder, loss,
                                   opts.speaker_adapt_steps, opts.speaker_adapt_lr)

    def _decode_batch(self, feats: list[Tensor], opts: RecognitionOptions,
                      should_stop: Callable[[], bool] | None = None):
        task = DecodingTask(self.model, opts, self.lm, self._lexicon_scorer, self._word_lm_scorer,
                            self.tokenizer)
        views = [pad_sequences([self._long_enough(view(f)) for f in feats]) for view in task.views()]
        with autocast(self.device, self.precision):
            return self._decode_padded(views, task, should_stop)

    def _encode(self, x: Tensor, lengths: Tensor) -> Encoded:
        """Padded features -> encoder memory, its mask, CTC log-probs and encoder lengths."""
        memory, mask = self.model.encode(x.to(self.device), lengths.to(self.device))
        return Encoded(memory, mask, self.model.ctc_logprobs(memory).float(), mask.sum(1))

    def _decode_padded(self, views: list[tuple[Tensor, Tensor]], task: DecodingTask,
                       should_stop: Callable[[], bool] | None = None):
        """views: (padded features, lengths) per view, the audio as it is first; the words'
        timing comes from that one."""
        encoded = []
        for x, lengths in views:
            stop_if(should_stop)
            encoded.append(self._encode(x, lengths))
        token_lists = task.run(encoded, should_stop)
        logprobs, enc_lengths = encoded[0].logprobs, encoded[0].lengths
        return [(self.tokenizer.decode(tokens), self._align(logprobs[b, : enc_lengths[b]], tokens))
                for b, tokens in enumerate(token_lists)]

    def _align(self, logprobs: Tensor, tokens: list[int]) -> list[Word]:
        """Word timings and confidences from a CTC forced alignment. logprobs (T, V)."""
        if not tokens:
            return []
        try:
            path, scores = AF.forced_align(logprobs[None].cpu(), torch.tensor([tokens]), blank=self.model.dims.blank)
        except RuntimeError:  # more tokens than frames allow: no timing, but keep the words
            return [Word(w, 0.0, 0.0, 0.0) for w in self.tokenizer.decode(tokens).split()]
        spans = AF.merge_tokens(path[0], scores[0].exp())
        words: list[tuple[list[int], list]] = []
        for span in spans:
            if not words or self.tokenizer.starts_word(span.token):
                words.append(([], []))
            words[-1][0].append(span.token)
            words[-1][1].append(span)
        fs = self.frame_seconds
        return [Word(self.tokenizer.decode(ids), round(sp[0].start * fs, 3), round((sp[-1].end + 1) * fs, 3),
                     round(sum(s.score for s in sp) / len(sp), 4))
                for ids, sp in words]


def _lexicon_path(lexicon: str | os.PathLike | bool | None) -> Path | None:
    if lexicon is False:
        return None
    if lexicon is None or lexicon is True:
        path = default_checkpoint("lexicon")
        return path if lexicon or path.is_file() else None
    return Path(lexicon)


def _word_lm_path(word_lm: str | os.PathLike | bool | None) -> Path | None:
    if word_lm is False:
        return None
    if word_lm is None or word_lm is True:
        try:
            return pocketsphinx_lm_path()
        except WordLMError:
            if word_lm:
                raise
            return None
    return Path(word_lm)


def _load_lm(lm: str | os.PathLike | bool | None, asr: dict) -> tuple[RNNLM | None, Path | None]:
    """The language model `Recognizer.load` asked for, checked against the ASR model's units,
    and its path."""
    if lm is False:
        return None, None
    path = default_checkpoint("lm") if lm is None or lm is True else Path(lm)
    if lm is None and not path.is_file():
        return None, None
    ckpt = load_checkpoint(path, kinds=("lm",))
    if ckpt["tokenizer"]["model"] != asr["tokenizer"]["model"]:
        if lm is None:
            return None, None  # the shipped LM belongs to the shipped recogniser's units
        raise CheckpointError(f"{path}: the language model's units are not the recogniser's "
                              "(train it with `speechq train lm --asr` on this model)")
    model = RNNLM(LMDims(**ckpt["dims"]))
    model.load_state_dict(float_state_dict(ckpt["state_dict"]))
    return model.eval(), path
