"""Recognizer plumbing on a tiny random checkpoint: long audio, word times, options."""

import pytest
import torch

from pipeline.inference.decoding import DecodingTask
from pipeline.inference.options import RecognitionOptions
from pipeline.inference.precision import autocast, resolve_precision
from pipeline.inference.recognizer import Recognizer
from pipeline.inference.vad import end_padding, split_on_pauses
from tests.helpers import make_tiny_asr_checkpoint

SR = 16_000


def _speech_with_pauses(seconds_on: list[float], pause: float = 0.6, seed: int = 0) -> torch.Tensor:
    """Noise bursts ('speech') separated by near-silence."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for s in seconds_on:
        parts += [0.3 * torch.randn(int(s * SR), generator=g), 1e-4 * torch.randn(int(pause * SR), generator=g)]
    return torch.cat(parts)


def test_split_on_pauses_cuts_in_silence_and_bounds_length():
    wav = _speech_with_pauses([7.0, 6.0, 8.0, 9.0, 5.0, 7.0])  # ~45 s
    ranges = split_on_pauses(wav, SR, max_seconds=20.0)
    assert ranges[0][0] == 0 and ranges[-1][1] == wav.numel()
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, in order
    assert all((end - start) / SR <= 20.0 for start, end in ranges)
    for _, cut in ranges[:-1]:  # every cut lands in a pause
        assert wav[cut - 800: cut + 800].abs().max() < 0.01


def test_short_audio_is_one_piece():
    assert split_on_pauses(torch.zeros(SR * 3), SR) == [(0, SR * 3)]


def test_end_padding_gives_a_clip_cut_off_in_speech_a_pause():
    paused = _speech_with_pauses([1.0, 1.0])  # burst, pause, burst, pause
    cut_off = paused[: int(2.6 * SR)]  # ends inside the second burst
    assert end_padding(paused, SR, 0.2).numel() == 0  # it ends in a pause already
    pad = end_padding(cut_off, SR, 0.2)
    assert pad.numel() == SR // 5 and 0 < pad.abs().max() < 0.01  # the clip's own pause
    g = torch.Generator().manual_seed(1)
    noisy = cut_off + 0.003 * torch.randn(cut_off.numel(), generator=g)
    pad = end_padding(noisy, SR, 0.2)
    assert pad.pow(2).mean().sqrt() == pytest.approx(0.003, rel=0.2)  # the noise floor goes on
    no_pause = 0.3 * torch.randn(SR, generator=g)
    assert torch.equal(end_padding(no_pause, SR, 0.2), torch.zeros(SR // 5))


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    path = make_tiny_asr_checkpoint(tmp_path_factory.mktemp("asr") / "asr.pt")
    return Recognizer.load(path)


@pytest.mark.parametrize("decoder", ["attention", "ctc"])
def test_long_audio_word_times_are_ordered_and_inside(recognizer, decoder):
    wav = _speech_with_pauses([6.0, 7.0, 6.0, 5.0])  # 26 s: two pieces
    t = recognizer.transcribe(wav, decoder=decoder, beam_size=2)
    assert t.duration == pytest.approx(wav.numel() / SR)
    starts = [w.start for w in t.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= t.duration + 0.1 for w in t.words)
    assert all(0.0 <= w.confidence <= 1.0 for w in t.words)


def test_batch_equals_one_by_one(recognizer):
    wavs = [_speech_with_pauses([1.0 + i], seed=i) for i in range(3)]
    batch = recognizer.transcribe_batch(wavs, beam_size=2)
    for wav, t in zip(wavs, batch):
        assert recognizer.transcribe(wav, beam_size=2).text == t.text


def test_an_empty_waveform_is_a_clear_error(recognizer):
    from pipeline.frontend.audio import EmptyAudioError

    with pytest.raises(EmptyAudioError, match="no audio samples"):
        recognizer.transcribe(torch.zeros(0))


@pytest.mark.parametrize("bad", [
    {"decoder": "rnnt"}, {"ctc_weight": 1.5}, {"rare_word_weight": -1}, {"tempo_views": 0.5},
    {"shift_views": -1}, {"r2l_weight": -0.1}, {"tempo": 0.4}, {"speaker_adapt_steps": -1},
    {"initial_silence_seconds": -0.1}, {"speaker_adapt_steps": 10, "speaker_adapt_lr": 0.0},
])
def test_a_call_with_a_bad_option_is_refused_before_any_work(recognizer, bad):
    with pytest.raises(ValueError, match=next(iter(bad)).split("_steps")[0]):
        recognizer.transcribe(torch.zeros(SR), **bad)


def test_views_are_the_audio_slower_faster_and_later(recognizer):
    x = torch.randn(100, 80)
    def views(**options):
        return DecodingTask(recognizer.model, RecognitionOptions(**options)).views()

    heard = [view(x) for view in views(tempo_views=0.05, shift_views=1)]
    assert torch.equal(heard[0], x)
    assert [v.size(0) for v in heard[1:3]] == [round(100 / 0.95), round(100 / 1.05)]
    shift = recognizer.model.dims.subsampling // 2
    assert torch.equal(heard[3], x[shift:])
    assert len(views(tempo_views=0.0, shift_views=3)) == 4
    assert len(views(decoder="ctc")) == 1  # greedy CTC: one pass


def test_each_view_scores_with_an_equal_share_of_the_weights(recognizer, monkeypatch):
    import pipeline.inference.decoding as module

    seen = []
    decode = module.decode
    monkeypatch.setattr(module, "decode", lambda scorers, weights, *a, **kw: seen.append(weights) or decode(scorers, weights, *a, **kw))
    recognizer.transcribe(_speech_with_pauses([1.0]), beam_size=2, tempo_views=0.05, shift_views=1, ctc_weight=0.3)
    weights = seen[0]
    decoders = [w for name, w in weights.items() if name.startswith("decoder")]
    ctcs = [w for name, w in weights.items() if name.startswith("ctc")]
    assert decoders == pytest.approx([0.7 / 4] * 4) and ctcs == pytest.approx([0.3 / 4] * 4)


def test_identical_views_decode_as_one(recognizer):
    """Views equal to the audio split its weights without changing a score: the ensemble of
    copies is the single model, hypothesis for hypothesis."""
    wavs = [_speech_with_pauses([1.0 + i], seed=i) for i in range(3)]
    one = recognizer.transcribe_batch(wavs, beam_size=3, tempo_views=0.0, shift_views=0)
    copies = recognizer.transcribe_batch(wavs, beam_size=3, tempo_views=1e-9, shift_views=0)
    assert [t.text for t in copies] == [t.text for t in one]
    assert any(t.text for t in one)  # the tiny random model does say something


def test_precision_resolves_per_device():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="GPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")


def test_bf16_autocast_runs_the_model_in_bf16(tmp_path):
    path = make_tiny_asr_checkpoint(tmp_path / "asr.pt")
    full, low = Recognizer.load(path), Recognizer.load(path, precision="bf16")
    dtypes = []
    low.model.ctc_head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    wav = _speech_with_pauses([1.5])
    t = low.transcribe(wav, beam_size=2)
    assert dtypes and set(dtypes) == {torch.bfloat16} and t.duration == pytest.approx(1.5 + 0.6, abs=0.01)
    x = full._features(wav)[None]  # the same encoder output in both precisions, to bf16 accuracy
    with torch.no_grad(), autocast(low.device, "bf16"):
        lp_low = low.model.ctc_logprobs(low.model.encode(x, torch.tensor([x.size(1)]))[0]).float()
    with torch.no_grad():
        lp_full = full.model.ctc_logprobs(full.model.encode(x, torch.tensor([x.size(1)]))[0])
    assert (lp_low.exp() - lp_full.exp()).abs().max() < 0.05


def test_a_clip_cut_off_in_speech_is_heard_with_silence_after_it(recognizer, monkeypatch):
    heard = []
    features = recognizer._features
    monkeypatch.setattr(recognizer, "_features", lambda wav: heard.append(wav) or features(wav))
    paused = _speech_with_pauses([0.5, 1.0])
    cut_off = paused[: int(1.6 * SR)]
    t = recognizer.transcribe(cut_off, beam_size=2)
    recognizer.transcribe(paused, beam_size=2)
    recognizer.transcribe(cut_off, beam_size=2, end_silence_seconds=0.0)
    assert [w.numel() for w in heard] == [cut_off.numel() + SR // 5, paused.numel(), cut_off.numel()]
    assert heard[0][cut_off.numel():].abs().max() < 0.01
    assert all(w.end <= t.duration for w in t.words)  # no word in the appended silence


def test_a_clip_trimmed_to_the_word_is_heard_with_silence_before_it(recognizer, monkeypatch):
    """A piece that starts in speech gets initial_silence_seconds of a pause before it (one that
    starts in a pause gets none), and word times stay the audio's own: the alignment's times
    are moved back by what was put before."""
    from pipeline.inference.recognizer import Word

    heard = []
    features = recognizer._features
    monkeypatch.setattr(recognizer, "_features", lambda wav: heard.append(wav) or features(wav))
    monkeypatch.setattr(recognizer, "_align", lambda logprobs, tokens: [Word("w", 0.3, 0.5, 1.0)])
    trimmed = _speech_with_pauses([0.5, 1.0])  # it starts in speech
    paused = torch.cat([1e-4 * torch.randn(int(0.6 * SR)), trimmed])
    t = recognizer.transcribe(trimmed, beam_size=2, initial_silence_seconds=0.25,
                              end_silence_seconds=0.0, tempo=1.0)
    recognizer.transcribe(paused, beam_size=2, initial_silence_seconds=0.25, end_silence_seconds=0.0)
    assert [w.numel() for w in heard] == [trimmed.numel() + SR // 4, paused.numel()]
    assert heard[0][: SR // 4].abs().max() < 0.01 and torch.equal(heard[0][SR // 4:], trimmed)
    assert (t.words[0].start, t.words[0].end) == pytest.approx((0.05, 0.25))


def test_tempo_is_what_the_model_hears_and_word_times_stay_the_audios(recognizer, monkeypatch):
    """At tempo 0.8 the model hears 1 / 0.8 times the frames; a word the alignment puts
    halfway through what it heard is halfway through the audio."""
    from pipeline.inference.recognizer import Word

    heard = []
    decode_batch = recognizer._decode_batch
    monkeypatch.setattr(recognizer, "_decode_batch", lambda feats, opts, *rest: heard.append(
        [f.size(0) for f in feats]) or decode_batch(feats, opts, *rest))

    def halfway(logprobs, tokens):
        seconds = logprobs.size(0) * recognizer.frame_seconds / 2
        return [Word("mid", seconds, seconds, 1.0)]

    monkeypatch.setattr(recognizer, "_align", halfway)
    wav = _speech_with_pauses([2.0], pause=0.4)
    plain = recognizer.transcribe(wav, beam_size=2, end_silence_seconds=0.0, tempo=1.0)
    slow = recognizer.transcribe(wav, beam_size=2, end_silence_seconds=0.0, tempo=0.8)
    assert heard[1][0] == round(heard[0][0] / 0.8)
    for t in (plain, slow):
        assert t.words[0].start == pytest.approx(t.duration / 2, abs=2 * recognizer.frame_seconds)


@pytest.fixture(scope="module")
def r2l_recognizer(tmp_path_factory):
    path = make_tiny_asr_checkpoint(tmp_path_factory.mktemp("asr-r2l") / "asr.pt", r2l_layers=1)
    return Recognizer.load(path)


def test_right_to_left_rescoring_off_is_the_beams_own_choice(recognizer, r2l_recognizer):
    """The same weights (the random generator draws the right-to-left decoder last): at
    r2l_weight 0 the model with it reads as the model without it."""
    wavs = [_speech_with_pauses([1.0 + i], seed=i) for i in range(3)]
    plain = recognizer.transcribe_batch(wavs, beam_size=3)
    assert [t.text for t in r2l_recognizer.transcribe_batch(wavs, beam_size=3, r2l_weight=0.0)] == \
        [t.text for t in plain]


def test_right_to_left_rescoring_reranks_the_finished_hypotheses(r2l_recognizer, monkeypatch):
    """Each utterance's hypotheses are re-ranked by search log-prob + r2l_weight * the
    right-to-left decoder's mean over the views, length-normalised; utterances stay apart."""
    from models.decoding import Hypothesis

    x = torch.randn(2, 120, 80)
    views = [r2l_recognizer._encode(x, torch.tensor([120, 100])) for _ in range(2)]
    r2l = {(5, 6): -1.0, (7,): -9.0, (8, 9, 10): -2.0}  # the views say these +- 1: their mean
    offsets = iter([1.0, -1.0])

    def score_reversed(memory, mask, hypotheses):
        offset = next(offsets)
        return torch.tensor([r2l[tuple(h)] + offset for h in hypotheses])

    monkeypatch.setattr(r2l_recognizer.model, "score_reversed", score_reversed)
    hyps = [[Hypothesis([7], -1.0 / 2, -1.0), Hypothesis([5, 6], -3.0 / 3, -3.0)],
            [Hypothesis([8, 9, 10], -4.0 / 4, -4.0)]]
    task = DecodingTask(r2l_recognizer.model, RecognitionOptions(r2l_weight=0.5))
    rescored = task.rescore_r2l(hyps, views)
    assert [[h.tokens for h in hs] for hs in rescored] == [[[5, 6], [7]], [[8, 9, 10]]]
    assert rescored[0][0].score == pytest.approx((-3.0 - 0.5) / 3)
    assert rescored[0][1].score == pytest.approx((-1.0 - 4.5) / 2)
    assert rescored[1][0].logprob == pytest.approx(-5.0)


def test_speaker_adaptation_decodes_again_with_adapted_norms_then_restores(recognizer, monkeypatch):
    """A first pass with the model's own norms, a second with norms trained on the first pass's
    transcripts (the call's inputs taken as one speaker), and the model as it was afterwards."""
    wavs = [_speech_with_pauses([1.0 + i], seed=i) for i in range(3)]
    before = {k: v.clone() for k, v in recognizer.model.state_dict().items()}
    final_norm = recognizer.model.encoder.ln.weight
    passes, decode_pieces = [], recognizer._decode_pieces

    def spy(feats, opts, *rest):
        passes.append(final_norm.detach().clone())
        return decode_pieces(feats, opts, *rest)

    monkeypatch.setattr(recognizer, "_decode_pieces", spy)
    adapted = recognizer.transcribe_batch(wavs, beam_size=2, speaker_adapt_steps=5,
                                          speaker_adapt_lr=1e-2)
    assert len(passes) == 2
    assert torch.equal(passes[0], before["encoder.ln.weight"])
    assert not torch.equal(passes[1], passes[0])
    assert all(torch.equal(v, before[k]) for k, v in recognizer.model.state_dict().items())
    assert len(adapted) == 3 and all(t.duration > 0 for t in adapted)
    passes.clear()
    recognizer.transcribe_batch(wavs, beam_size=2)
    assert len(passes) == 1  # off by default: one pass
