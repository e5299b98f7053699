"""`DecodingTask`: one place that turns `RecognitionOptions` into the parts of a decoding.

    task = DecodingTask(model, options, lm=lm, lexicon=lexicon_scorer, word_lm=word_lm_scorer,
                        tokenizer=tokenizer)
    views = [pad_sequences([view(f) for f in feats]) for view in task.views()]
    tokens = task.run([encode(x, lengths) for x, lengths in views])   # token ids per utterance

Joint decoding hears each piece in several views, an ensemble of one model (test-time
augmentation): as it is, at tempo 1 -+ `tempo_views`, and `shift_views` fractions of an encoder
step later; each view's decoder and CTC prefix scores take an equal share of their weights. The
language model, the lexicon and the word n-gram model join the search with their weights
(ESPnet's idea: a dict of scorers and a dict of weights), and so do a job's hotwords
(models.biasing, `hotword_weight` per paid token), each normalised as transcripts spell words
and spelled in the recogniser's units as it would be mid-sentence. A model with a right-to-left
decoder rescores the beam's finished hypotheses with it, `r2l_weight` times its log-probability
averaged over the views (attention rescoring, WeNet's U2++). Greedy CTC hears the piece once
(and takes no hotwords: RecognitionOptions refuses them with decoder "ctc").
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import NamedTuple

import torch
from torch import Tensor

from models.asr import SpeechTransformer
from models.biasing import HotwordScorer
from models.ctc import CTCPrefixScorer, ctc_greedy
from models.decoding import DecoderScorer, DecodingOptions, Hypothesis, LengthBonus, decode
from models.lexicon import LexiconScorer
from models.lm import RNNLM, LMScorer
from models.wordlm import WordLMScorer
from pipeline.frontend.features import stretch
from pipeline.frontend.text import words_for_scoring
from pipeline.frontend.tokenizer import SubwordTokenizer
from pipeline.inference.options import RecognitionOptions


class Encoded(NamedTuple):
    """One view of a batch through the encoder."""

    memory: Tensor  # (B, T', d_model)
    mask: Tensor  # (B, T') True at real frames
    logprobs: Tensor  # (B, T', V) CTC log-probabilities, float32
    lengths: Tensor  # (B,) encoder frames


class DecodingTask:
    def __init__(self, model: SpeechTransformer, options: RecognitionOptions,
                 lm: RNNLM | None = None, lexicon: LexiconScorer | None = None,
                 word_lm: WordLMScorer | None = None, tokenizer: SubwordTokenizer | None = None):
        """`tokenizer`: the model's units, to spell the options' hotwords with."""
        self.model, self.options = model, options
        self.lm, self.lexicon, self.word_lm = lm, lexicon, word_lm
        self.tokenizer = tokenizer

    def views(self) -> list[Callable[[Tensor], Tensor]]:
        """Feature transforms, the identity first, whose encodings are scored as one ensemble:
        each view's errors are partly its own."""
        opts = self.options
        views: list[Callable[[Tensor], Tensor]] = [lambda x: x]
        if opts.decoder == "ctc":  # greedy CTC stays the fast single pass
            return views
        if opts.tempo_views > 0:
            views += [partial(stretch, factor=1 + s * opts.tempo_views) for s in (-1, 1)]
        step = self.model.dims.subsampling / (opts.shift_views + 1)
        views += [lambda x, k=round(k * step): x[k:] for k in range(1, opts.shift_views + 1)]
        return views

    def run(self, encoded: list[Encoded],
            should_stop: Callable[[], bool] | None = None) -> list[list[int]]:
        """The best token ids of each utterance; `encoded` has one entry per view, in `views()`
        order. `should_stop` is asked before every search step (models.decoding.decode)."""
        dims = self.model.dims
        if self.options.decoder == "ctc":
            return ctc_greedy(encoded[0].logprobs, encoded[0].lengths, dims.blank)
        scorers, weights = self.scorers(encoded)
        hyps = decode(scorers, weights, dims.sos, dims.eos, encoded[0].lengths,
                      self._search_options(), should_stop=should_stop)
        if self._rescores:
            hyps = self.rescore_r2l(hyps, encoded)
        # a search that reached its length limit with only impossible extensions left (CTC's
        # finite -1e30) may have taken blanks: they spell nothing
        return [[t for t in h[0].tokens if t != dims.blank] for h in hyps]

    def scorers(self, encoded: list[Encoded]) -> tuple[dict, dict[str, float]]:
        """The search's scorers and their weights, by name."""
        opts, dims = self.options, self.model.dims
        scorers, weights = {"length": LengthBonus(dims.vocab_size)}, {"length": opts.length_bonus}
        share = 1 / len(encoded)
        for v, view in enumerate(encoded):
            tag = f"@{v}" if v else ""  # view 0 keeps the plain names
            scorers["decoder" + tag] = DecoderScorer(self.model, view.memory, view.mask)
            weights["decoder" + tag] = (1 - opts.ctc_weight) * share
            if opts.ctc_weight > 0:
                scorers["ctc" + tag] = CTCPrefixScorer(view.logprobs, view.lengths, dims.blank,
                                                       dims.eos)
                weights["ctc" + tag] = opts.ctc_weight * share
        if self.lm is not None and opts.lm_weight > 0:
            scorers["lm"], weights["lm"] = LMScorer(self.lm), opts.lm_weight
        if self.lexicon is not None and opts.lexicon_weight > 0:
            lexicon = self.lexicon
            if opts.hotwords and opts.hotword_weight > 0:
                lexicon = lexicon_with_hotwords(lexicon, opts.hotwords)
            scorers["lexicon"] = lexicon.with_rare_cost(opts.rare_word_weight / opts.lexicon_weight)
            weights["lexicon"] = opts.lexicon_weight
        if self.word_lm is not None and opts.word_lm_weight > 0:
            scorers["word_lm"] = self.word_lm.with_word_bonus(opts.word_bonus)
            weights["word_lm"] = opts.word_lm_weight
        if opts.hotwords and opts.hotword_weight > 0:
            if self.tokenizer is None:
                raise ValueError("hotwords need the recogniser's tokenizer to spell them")
            scorers["hotwords"] = hotword_scorer(self.tokenizer, opts.hotwords, dims.eos)
            weights["hotwords"] = opts.hotword_weight
        return scorers, weights

    @property
    def _rescores(self) -> bool:
        opts = self.options
        return self.model.r2l is not None and opts.r2l_weight > 0 and opts.beam_size > 1

    def _search_options(self) -> DecodingOptions:
        opts = self.options
        return DecodingOptions(beam_size=opts.beam_size, length_penalty=opts.length_penalty,
                               max_len_ratio=1.0, max_len_offset=2,
                               pre_beam_ratio=opts.pre_beam_ratio,
                               n_best=opts.beam_size if self._rescores else 1)

    def rescore_r2l(self, hyps: list[list[Hypothesis]], encoded: list[Encoded]
                    ) -> list[list[Hypothesis]]:
        """Each utterance's finished hypotheses re-ranked with `r2l_weight` times the
        right-to-left decoder's log-probability (the mean over the views) added to their
        search scores, length-normalised as the search normalised them."""
        rows = [b for b, hs in enumerate(hyps) for _ in hs]
        flat = [h for hs in hyps for h in hs]
        if not flat:
            return hyps
        index = torch.tensor(rows, device=encoded[0].memory.device)
        tokens = [h.tokens for h in flat]
        r2l = torch.stack([self.model.score_reversed(view.memory[index], view.mask[index], tokens)
                           for view in encoded]).mean(0).float().cpu()
        out: list[list[Hypothesis]] = [[] for _ in hyps]
        for b, h, r2l_logprob in zip(rows, flat, r2l.tolist()):
            out[b].append(h.plus(self.options.r2l_weight * r2l_logprob, self.options.length_penalty))
        return [sorted(hs, key=lambda h: h.score, reverse=True) for hs in out]


@lru_cache(maxsize=8)
def lexicon_with_hotwords(lexicon: LexiconScorer, hotwords: tuple[str, ...]) -> LexiconScorer:
    """The word list's scorer with the hotwords' words added: a job's hotwords are words it
    expects, so they no longer pay as words outside the list, and the hotword bonus need not
    outbid that cost (cached like the hotwords' own scorer)."""
    return lexicon.with_words(w for h in hotwords for w in words_for_scoring(h).split())


@lru_cache(maxsize=8)
def hotword_scorer(tokenizer: SubwordTokenizer, hotwords: tuple[str, ...],
                   eos: int) -> HotwordScorer:
    """The scorer of `hotwords`, each as the transcript would spell it (words_for_scoring) in
    the tokenizer's units; a sentencepiece word begins with its word-start piece wherever it
    stands, so a hotword alone is spelled as mid-sentence. Cached: the batches of one job, and
    the jobs of one hotword list, share a scorer. A hotword with a letter the units cannot
    spell (the unknown piece) is one the model never writes: it is left out."""
    pieces = tokenizer.pieces()
    spelled = [tokenizer.encode(h) for h in sorted({words_for_scoring(h) for h in hotwords} - {""})]
    return HotwordScorer([s for s in spelled if all(pieces[t] is not None for t in s)], pieces, eos)
