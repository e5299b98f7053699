from dataclasses import replace

import pytest
import torch

from models.attention import CROSS_ATTENTION, MonotonicCrossAttention
from models.fastspeech import Postnet
from models.losses import diagonal_score, focus_rate, guided_attention_loss
from models.tts import (
    SynthesisOptions,
    TransformerTTS,
    TTSDims,
    TTSLossOptions,
    durations_from_attention,
    monotonic_alignment,
)

VARIANTS = sorted(CROSS_ATTENTION)
V, M = 7, 8  # tiny vocabulary (0 = pad) and mel bins


def _dims(variant="dot", r=2, **overrides):
    options = {"noise_std": 1.0} if variant == "monotonic" else {}
    base = dict(vocab_size=V, n_mels=M, reduction=r, d_model=32, n_heads=2, d_ff=64,
                n_encoder_layers=1, n_decoder_layers=2, dropout=0.0, cross_attention=variant,
                attention_options=options, encoder_prenet_layers=1, encoder_prenet_kernel=3, decoder_prenet_dim=32,
                prenet_dropout=0.2, postnet_channels=16, postnet_layers=2)
    return TTSDims(**{**base, **overrides})


def _model(variant="dot", dtype=torch.float64, seed=0, **overrides):
    torch.manual_seed(seed)
    return TransformerTTS(_dims(variant, **overrides)).to(dtype).eval()


def _tokens(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for b, n in enumerate(lengths):
        tokens[b, :n] = torch.randint(1, V, (n,), generator=g)
    return tokens


def _mels(lengths, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(len(lengths), max(lengths), M, generator=g, dtype=dtype)
    mel *= (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None])[..., None]
    return mel, torch.tensor(lengths)


def _hard_alignment(durations: list[int], r: int = 1) -> torch.Tensor:
    """One-hot (steps, S) alignment of frame durations, read at each step's first frame."""
    tokens = torch.arange(len(durations)).repeat_interleave(torch.tensor(durations))
    return torch.nn.functional.one_hot(tokens[::r], len(durations)).double()


# ---------------------------------------------------------------------- options


def test_options_are_validated():
    with pytest.raises(ValueError):
        _dims(text_units="words")
    with pytest.raises(ValueError):
        _dims("additive")
    with pytest.raises(ValueError):
        _dims(r=0)
    with pytest.raises(ValueError):
        SynthesisOptions(stop_threshold=1.0)
    with pytest.raises(ValueError):
        SynthesisOptions(window=(0, 0))
    with pytest.raises(ValueError):
        TTSLossOptions(guided_sigma=0.0)
    assert TransformerTTS(TTSDims(**_dims().to_dict())).dims == _dims()  # rebuilt from the dict


# ---------------------------------------------------------------------- guided attention


def test_guided_attention_loss_is_zero_on_the_diagonal_and_high_off_it():
    diagonal = _hard_alignment([3] * 10)[None]  # (1, 30, 10)
    anti = diagonal.flip(-1)
    lengths_in, lengths_out = torch.tensor([10]), torch.tensor([30])
    assert guided_attention_loss(diagonal, lengths_in, lengths_out) < 0.02
    assert guided_attention_loss(anti, lengths_in, lengths_out) > 0.6
    uniform = torch.full((1, 30, 10), 0.1, dtype=torch.float64)
    assert 0.05 < guided_attention_loss(uniform, lengths_in, lengths_out) < 0.6
    assert diagonal_score(diagonal, lengths_in, lengths_out) > 0.95


def test_guided_attention_loss_ignores_padding():
    a = _hard_alignment([2, 3, 1])  # (6, 3)
    b = _hard_alignment([2, 2, 2, 2, 2])  # (10, 5)
    batch = torch.zeros(2, 2, 10, 5, dtype=torch.float64)  # (B, H, T, S), padded
    batch[0, :, :6, :3] = a
    batch[1, :] = b
    batch[0, :, 6:, :] = 0.5  # rubbish in padding must not count
    per_head = diagonal_score(batch, torch.tensor([3, 5]), torch.tensor([6, 10]))
    alone = diagonal_score(a[None, None], torch.tensor([3]), torch.tensor([6]))
    assert per_head.shape == (2, 2)
    assert torch.allclose(per_head[0], alone[0])


def test_focus_rate():
    sharp = _hard_alignment([2, 2])[None, None]
    blurred = torch.full((1, 1, 4, 2), 0.5, dtype=torch.float64)
    assert focus_rate(sharp, torch.tensor([4])).item() == pytest.approx(1.0)
    assert focus_rate(blurred, torch.tensor([4])).item() == pytest.approx(0.5)


# ---------------------------------------------------------------------- durations


def test_monotonic_alignment_recovers_a_hard_alignment():
    durations = [3, 1, 4, 2]
    align = _hard_alignment(durations)
    log_probs = align.clamp_min(1e-8).log()[None]
    path = monotonic_alignment(log_probs, torch.tensor([4]), torch.tensor([10]))
    assert path[0].tolist() == torch.arange(4).repeat_interleave(torch.tensor(durations)).tolist()


@pytest.mark.parametrize("r", [1, 2, 3])
def test_durations_from_attention_sum_to_length_and_pick_the_diagonal_head(r):
    truth = [[4, 6, 2, 6, 3], [3, 5, 4, 0, 0]]
    frames = torch.tensor([sum(d) for d in truth])
    steps = -(-frames // r)
    weights = torch.zeros(2, 2, int(steps.max()), 5, dtype=torch.float64)  # (B, H, T, S)
    for b, d in enumerate(truth):
        d = [x for x in d if x]
        weights[b, 1, : steps[b], : len(d)] = _hard_alignment(d, r)
        weights[b, 0, : steps[b], 0] = 1.0  # a head stuck on the first token
    in_lengths = torch.tensor([5, 3])
    durations = durations_from_attention(weights, in_lengths, frames, r)
    assert durations.sum(1).tolist() == frames.tolist()
    assert (durations[0] >= 1).all() and (durations[1, :3] >= 1).all()
    assert (durations[1, 3:] == 0).all()
    error = (durations.cumsum(1) - torch.tensor(truth).cumsum(1)).abs()
    assert error.max() <= (0 if r == 1 else r - 1)  # a boundary inside a step is known to within r


def test_durations_need_a_frame_per_token():
    weights = torch.full((1, 1, 2, 4), 0.25)
    with pytest.raises(ValueError, match="every input needs a frame"):
        durations_from_attention(weights, torch.tensor([4]), torch.tensor([3]), r=1)


# ---------------------------------------------------------------------- model properties


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch", [1, 3])
def test_incremental_equals_teacher_forced(variant, batch):
    model = _model(variant)
    tokens = _tokens([5, 3, 6][:batch])
    mel, mel_lengths = _mels([9, 5, 12][:batch])
    with torch.no_grad():
        full = model(tokens, mel, mel_lengths, prenet_dropout=False)
        memory, mask = model.encode(tokens)
        frames_in = model.teacher_inputs(mel)
        state, mels, stops, weights = None, [], [], []
        for t in range(frames_in.size(1)):
            out = model.decode(frames_in[:, t: t + 1], memory, mask, state, prenet_dropout=False)
            state = out.state
            mels.append(out.mel)
            stops.append(out.stop_logits)
            weights.append(out.weights[-1])
    frame_mask = (torch.arange(full.mel.size(1))[None, :] < mel_lengths[:, None])[..., None]
    assert (torch.cat(mels, 1) * frame_mask - full.mel_before).abs().max() < 1e-9
    assert (torch.cat(stops, 1) - full.stop_logits).abs().max() < 1e-9
    assert (torch.cat(weights, 2) - full.weights[-1]).abs().max() < 1e-9


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_synthesis_equals_one_by_one(variant):
    model = _model(variant)
    tokens = _tokens([6, 3, 5], seed=1)
    options = SynthesisOptions(prenet_dropout=False, min_len_ratio=1.0, max_len_ratio=3.0)
    batched = model.generate(tokens, options)
    assert len({r.mel.size(0) for r in batched}) > 1  # items stop at different steps
    for b, n in enumerate([6, 3, 5]):
        alone = model.generate(tokens[b: b + 1, :n], options)[0]
        assert batched[b].mel.shape == alone.mel.shape
        assert (batched[b].mel - alone.mel).abs().max() < 1e-9
        assert (batched[b].weights - alone.weights).abs().max() < 1e-9
        assert batched[b].hit_length_cap == alone.hit_length_cap
        assert batched[b].focus_rate == pytest.approx(alone.focus_rate)


@pytest.mark.parametrize("variant", VARIANTS)
def test_monotonic_inference_never_moves_backward(variant):
    model = _model(variant, dtype=torch.float32, seed=3)
    tokens = _tokens([9, 4, 7], seed=2)
    options = SynthesisOptions(window=(0, 2), min_len_ratio=3.0, max_len_ratio=4.0)
    for result in model.generate(tokens, options):
        w = result.weights  # (L, H, steps, S)
        if variant == "monotonic":  # a hard alignment per head: stays or moves one position
            position = w.argmax(-1)
            moves = position[..., 1:] - position[..., :-1]
            assert ((w.max(-1).values - 1).abs() < 1e-6).all()
            assert moves.min() >= 0 and moves.max() <= 1
        else:  # the focus (head-averaged argmax) of every layer moves forward, <= 2 at a time
            focus = w.mean(1).argmax(-1)  # (L, steps)
            moves = focus[:, 1:] - focus[:, :-1]
            assert moves.min() >= 0 and moves.max() <= 2


def test_stops_at_the_stop_token_or_reports_the_cap():
    model = _model("dot", r=3)
    tokens = _tokens([4, 6])
    with torch.no_grad():
        model.stop_out.bias.fill_(-50.0)  # never stops
    capped = model.generate(tokens, SynthesisOptions(max_len_ratio=2.0, max_len_offset=0,
                                                     monotonic=False, prenet_dropout=False))
    assert [r.hit_length_cap for r in capped] == [True, True]
    assert [r.mel.size(0) for r in capped] == [9, 12]  # ceil(2 * S / r) steps of r frames
    offset = SynthesisOptions(max_len_ratio=2.0, max_len_offset=6, monotonic=False, prenet_dropout=False)
    assert [r.mel.size(0) for r in model.generate(tokens, offset)] == [15, 18]  # ceil((2 S + 6) / r)
    with torch.no_grad():
        model.stop_out.bias.copy_(torch.tensor([-50.0, 50.0, -50.0]))  # stops at a step's 2nd frame
    stopped = model.generate(tokens, SynthesisOptions(min_len_ratio=1.0, monotonic=False,
                                                      prenet_dropout=False))
    assert [r.hit_length_cap for r in stopped] == [False, False]
    assert [r.mel.size(0) for r in stopped] == [5, 8]  # first step past min_len, then 2 frames
    assert all(0 < r.focus_rate <= 1 for r in stopped)


def test_a_monotonic_decode_does_not_stop_before_its_focus_reaches_the_end():
    """With monotonic attention, a stop token that fires at once is ignored until the focus
    is near the last token, so an early stop cannot drop the end of the text."""
    model = _model("monotonic", r=2, dtype=torch.float32, seed=4)
    tokens = _tokens([9, 12])
    with torch.no_grad():
        model.stop_out.bias.fill_(50.0)  # always fires
    options = SynthesisOptions(max_dwell_frames=4, max_len_ratio=40.0, prenet_dropout=False)
    for result, n in zip(model.generate(tokens, options), [9, 12]):
        assert not result.hit_length_cap
        focus = result.weights.mean(dim=(0, 1)).argmax(-1)  # (steps,)
        assert focus[-1] > n - 1 - 3  # it ended only near the last token
        assert result.mel.size(0) > 2  # ... so not at its first step
    unconstrained = model.generate(tokens, replace(options, monotonic=False))
    assert [r.mel.size(0) for r in unconstrained] == [1, 1]  # the stop token alone: first frame


def test_hard_monotonic_attention_moves_on_after_max_dwell():
    """Heads that would stay forever (stay probability ~1) move one position every
    max_dwell + 1 steps, never backwards and never past the last position."""
    torch.manual_seed(0)
    attn = MonotonicCrossAttention(16, 2, bias_init=50.0)
    memory, mask = torch.randn(2, 5, 16), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    state = attn.init_state(memory, mask, window=(0, 1), max_dwell=2)
    positions = []
    for _ in range(12):
        _, weights, state = attn(torch.randn(2, 1, 16), memory, mask, state)
        positions.append(weights[:, :, 0].argmax(-1))  # (B, H)
    positions = torch.stack(positions, dim=-1)  # (B, H, steps)
    assert positions[0, 0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    assert positions[1].max() == 2 and (positions.diff(dim=-1) >= 0).all()


def test_an_item_whose_attention_holds_the_last_token_ends_there():
    """A decoder that never fires its stop token still ends once its (monotonic) focus has sat
    on the last input token for max_dwell_frames, not at the length cap."""
    model = _model("dot", r=2, dtype=torch.float32, seed=4)
    tokens = _tokens([4, 6])
    with torch.no_grad():
        model.stop_out.bias.fill_(-50.0)  # never stops by itself
    options = SynthesisOptions(max_dwell_frames=6, max_len_ratio=40.0, prenet_dropout=False)
    for result, n in zip(model.generate(tokens, options), [4, 6]):
        assert not result.hit_length_cap
        focus = result.weights.mean(dim=(0, 1)).argmax(-1)  # (steps,)
        assert (focus[-3:] == n - 1).all()  # the last 6 frames (3 steps) on the last token
        assert result.mel.size(0) < 40 * n
    unbounded = SynthesisOptions(max_dwell_frames=None, max_len_ratio=3.0, prenet_dropout=False)
    assert all(r.hit_length_cap for r in model.generate(tokens, unbounded))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("sampling_p", [0.0, 0.5])
def test_gradients_finite(variant, sampling_p):
    model = _model(variant, dtype=torch.float32).train()
    tokens = _tokens([5, 3])
    mel, mel_lengths = _mels([9, 6], dtype=torch.float32)
    losses = model.loss(tokens, mel, mel_lengths, sampling_p=sampling_p)
    losses["loss"].backward()
    assert set(losses) == {"loss", "mel", "postnet", "stop", "guided"}
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.embed.weight.grad.abs().sum() > 0


def test_guided_loss_on_chosen_layers_and_heads():
    model = _model("dot", dtype=torch.float32).train()
    tokens, (mel, mel_lengths) = _tokens([5, 3]), _mels([9, 6], dtype=torch.float32)
    torch.manual_seed(0)
    all_heads = model.loss(tokens, mel, mel_lengths, TTSLossOptions())["guided"]
    torch.manual_seed(0)
    chosen = TTSLossOptions(guided_layers=(1,), guided_heads=(0,))
    one = model.loss(tokens, mel, mel_lengths, chosen)
    assert one["guided"] != all_heads
    torch.manual_seed(0)
    off = model.loss(tokens, mel, mel_lengths, TTSLossOptions(guided_weight=0.0))
    assert "guided" not in off


# ---------------------------------------------------------------------- learning to align


def _synthetic_corpus(n_utterances=8, seed=0):
    """Random phone strings; each phone is a fixed mel pattern held for a fixed duration."""
    g = torch.Generator().manual_seed(seed)
    patterns = 1.5 * torch.randn(V, M, generator=g)
    frames_per_phone = torch.tensor([0, 2, 5, 3, 6, 2, 4])
    tokens, mels = [], []
    for n in torch.randint(5, 10, (n_utterances,), generator=g).tolist():
        phones = torch.randint(1, V, (n,), generator=g)
        frames = patterns[phones].repeat_interleave(frames_per_phone[phones], dim=0)
        tokens.append(phones)
        mels.append(frames + 0.1 * torch.randn(frames.shape, generator=g))
    pad = torch.nn.utils.rnn.pad_sequence
    lengths = torch.tensor([m.size(0) for m in mels])
    return pad(tokens, batch_first=True), pad(mels, batch_first=True), lengths


@pytest.mark.slow
def test_tiny_model_learns_to_align():
    torch.set_num_threads(1)
    tokens, mel, mel_lengths = _synthetic_corpus()
    torch.manual_seed(0)
    model = TransformerTTS(_dims("dot", n_decoder_layers=1)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        losses = model.loss(tokens, mel, mel_lengths)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(tokens, mel, mel_lengths, prenet_dropout=False)
    in_lengths, steps = (tokens != 0).sum(1), -(-mel_lengths // 2)
    score = diagonal_score(torch.cat(out.weights, 1), in_lengths, steps).amax(1)
    assert score.min() > 0.85
    results = model.generate(tokens, SynthesisOptions(prenet_dropout=False))
    assert not any(r.hit_length_cap for r in results)
    assert min(r.focus_rate for r in results) > 0.8
    for r, target, n in zip(results, mel, mel_lengths.tolist()):
        assert abs(r.mel.size(0) - n) <= 2  # stops where the utterance ends
        k = min(r.mel.size(0), n)
        assert (r.mel[:k] - target[:k]).abs().mean() < 0.4  # says the phones of the text, in order


def test_postnet_output_does_not_depend_on_padding():
    torch.manual_seed(0)
    postnet = Postnet(M, 16, 3).double().eval()
    mel, lengths = _mels([4, 11])
    mel[0, 4:] = 7.0  # rubbish past the first item's end
    mask = torch.arange(11)[None, :] < lengths[:, None]
    batched = postnet(mel, mask)
    alone = postnet(mel[:1, :4], mask[:1, :4])
    assert (batched[0, :4] - alone[0]).abs().max() < 1e-12
    assert batched[0, 4:].abs().max() == 0
