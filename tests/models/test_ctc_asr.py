import itertools
import math

import pytest
import torch

from models.asr import ASRDims, RightToLeftSteps, SpeechTransformer, reverse_padded
from models.ctc import CTCPrefixScorer, ctc_greedy
from models.decoding import DecoderScorer, DecodingOptions, decode

BLANK, EOS = 0, 1


def _collapse(path):
    out = [t for i, t in enumerate(path) if t != BLANK and (i == 0 or t != path[i - 1])]
    return out


def _brute_force(logprobs, prefix):
    """P(output starts with prefix), P(output == prefix) by enumerating every CTC path."""
    T, V = len(logprobs), len(logprobs[0])
    starts, exact = 0.0, 0.0
    for path in itertools.product(range(V), repeat=T):
        if EOS in path:
            continue  # EOS is not a CTC label
        p = math.exp(sum(logprobs[t][s] for t, s in enumerate(path)))
        y = _collapse(path)
        if y[: len(prefix)] == prefix:
            starts += p
        if y == prefix:
            exact += p
    return starts, exact


def _toy_logprobs(T=5, V=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, V, generator=g, dtype=torch.float64)
    logits[:, EOS] = -1e9  # the CTC head never outputs the EOS id
    return logits.log_softmax(-1)


def test_ctc_prefix_scores_match_brute_force():
    x = _toy_logprobs()
    scorer = CTCPrefixScorer(x[None], torch.tensor([5]), blank=BLANK, eos=EOS)
    state = scorer.init_state(1)
    prefix = []
    for step_token in [2, 3, 3]:  # walk a prefix with a repeated label
        scores, pending = scorer.score(None, state)
        base, _ = _brute_force(x.tolist(), prefix) if prefix else (1.0, None)
        for c in (2, 3):
            expected, _ = _brute_force(x.tolist(), prefix + [c])
            got = math.exp(float(scores[0, c])) * base
            assert got == pytest.approx(expected, rel=1e-6, abs=1e-12)
        _, exact = _brute_force(x.tolist(), prefix)
        assert math.exp(float(scores[0, EOS])) * base == pytest.approx(exact, rel=1e-6, abs=1e-12)
        assert scores[0, BLANK] < -1e20
        state = scorer.select(pending, torch.tensor([0]), torch.tensor([step_token]))
        prefix.append(step_token)


def test_ctc_prefix_scorer_respects_lengths_in_a_batch():
    x = _toy_logprobs(T=5)
    padded = torch.cat([x, _toy_logprobs(T=3, seed=1)], 0)[None].expand(2, -1, -1).clone()
    padded[0, 5:] = 0.0  # garbage after the valid frames of item 0
    scorer = CTCPrefixScorer(padded[:, :8], torch.tensor([5, 8]), blank=BLANK, eos=EOS)
    alone = CTCPrefixScorer(x[None], torch.tensor([5]), blank=BLANK, eos=EOS)
    batch_state, alone_state = scorer.init_state(1), alone.init_state(1)
    for token in [2, 3, 3]:  # a prefix as long as the short item allows, a repeat included
        s_batch, batch_pending = scorer.score(None, batch_state)
        s_alone, alone_pending = alone.score(None, alone_state)
        assert torch.allclose(s_batch[0], s_alone[0])
        batch_state = scorer.select(batch_pending, torch.tensor([0, 1]), torch.tensor([token] * 2))
        alone_state = alone.select(alone_pending, torch.tensor([0]), torch.tensor([token]))


def test_partial_ctc_scores_equal_full_scores_at_the_candidates():
    """Pre-beam scoring computes the same prefix scores, for the few tokens it is given, as
    scoring the whole vocabulary: after a repeat, for EOS and blank, over hypotheses of
    different lengths and prefixes."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 9, 7, generator=g, dtype=torch.float64)
    logits[..., EOS] = -1e9
    scorer = CTCPrefixScorer(logits.log_softmax(-1), torch.tensor([9, 6]), blank=BLANK, eos=EOS)
    state = scorer.init_state(2)  # N = 4 rows: two utterances, two beams
    for step_tokens in ([2, 3, 4, 2], [2, 5, 4, 6]):  # rows 0 and 3 then end in a repeat
        full, pending = scorer.score(None, state)
        candidates = torch.tensor([[2, EOS, 6], [3, BLANK, 5], [EOS, 4, 2], [6, 2, 3]])
        partial, partial_pending = scorer.score_partial(None, state, candidates)
        assert torch.allclose(partial, full.gather(1, candidates))
        hyp, token = torch.tensor([1, 0, 3, 2]), torch.tensor(step_tokens)
        state = scorer.select(pending, hyp, token)
        # selecting through the candidates gives the same state where the token was one
        via = scorer.select(partial_pending, hyp, token)
        was_candidate = (candidates[hyp] == token[:, None]).any(1)
        assert torch.allclose(via.r[:, was_candidate], state.r[:, was_candidate])
        assert torch.allclose(via.psi[was_candidate], state.psi[was_candidate])


def test_pre_beam_over_the_whole_vocabulary_decodes_as_full_scoring():
    model = _tiny_asr()
    x = torch.randn(2, 40, 16, generator=torch.Generator().manual_seed(0))
    memory, mask = model.encode(x, torch.tensor([40, 31]))

    def run(ratio, beam):
        scorers = {"decoder": DecoderScorer(model, memory, mask),
                   "ctc": CTCPrefixScorer(model.ctc_logprobs(memory), mask.sum(1), BLANK, EOS)}
        return decode(scorers, {"decoder": 0.7, "ctc": 0.3}, 1, EOS, mask.sum(1),
                      DecodingOptions(beam_size=beam, n_best=beam, pre_beam_ratio=ratio))

    for beam in (1, 3):
        full, covering = run(0.0, beam), run(12 / beam, beam)  # vocab_size 12
        assert [[h.tokens for h in u] for u in covering] == [[h.tokens for h in u] for u in full]
        assert [h.score for u in covering for h in u] == pytest.approx(
            [h.score for u in full for h in u], rel=1e-5)


def test_beams_sharing_one_copy_of_the_memory_score_as_with_a_copy_each():
    """Dot cross-attention keeps the encoder memory once per utterance in beam search; every
    step's scores and the final hypotheses are those of a copy per hypothesis."""
    model = _tiny_asr()
    assert model.shares_context_across_beams
    x = torch.randn(3, 40, 16, generator=torch.Generator().manual_seed(1))
    memory, mask = model.encode(x, torch.tensor([40, 29, 35]))
    K = 4
    shared = DecoderScorer(model, memory, mask)
    copied = model.init_decoder(memory.repeat_interleave(K, 0), mask.repeat_interleave(K, 0))
    state = shared.init_state(K)
    assert state.memory.size(0) == 3  # one copy, not 12
    tokens = torch.full((3 * K, 1), 1)
    g = torch.Generator().manual_seed(2)
    for _ in range(4):
        one, state = shared.score(tokens, state)
        many, copied = model.decode_step(tokens[:, -1:], copied)
        torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-5)
        hyp = torch.cat([b * K + torch.randint(0, K, (K,), generator=g) for b in range(3)])
        token = torch.randint(2, 12, (3 * K,), generator=g)
        state, copied = shared.select(state, hyp, token), copied.reorder(hyp)
        tokens = torch.cat([tokens[hyp], token[:, None]], 1)

    def run(step_model):
        return decode({"decoder": DecoderScorer(step_model, memory, mask)}, {}, 1, EOS, mask.sum(1),
                      DecodingOptions(beam_size=K, n_best=K))

    shared_hyps, copied_hyps = run(model), run(_CopyPerHypothesis(model))
    assert [[h.tokens for h in u] for u in shared_hyps] == [[h.tokens for h in u] for u in copied_hyps]


class _CopyPerHypothesis:
    """The same decoder, with DecoderScorer's default: a copy of the memory per hypothesis."""

    shares_context_across_beams = False

    def __init__(self, model):
        self.model = model

    def init_decoder(self, *context):
        return self.model.init_decoder(*context)

    def decode_step(self, tokens, state):
        return self.model.decode_step(tokens, state)


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    path = torch.tensor([[0, 2, 2, 0, 2, 3, 3, 0]])
    logprobs = torch.nn.functional.one_hot(path, 4).float().log()
    assert ctc_greedy(logprobs, torch.tensor([8]), BLANK) == [[2, 2, 3]]


def _tiny_asr(attention="dot", subsampling=4, r2l_layers=0):
    torch.manual_seed(0)
    dims = ASRDims(vocab_size=12, n_mels=16, subsampling=subsampling, conv_channels=8, d_model=32,
                   n_heads=2, d_ff=64, n_encoder_layers=2, n_decoder_layers=2, dropout=0.0,
                   cross_attention=attention, n_r2l_decoder_layers=r2l_layers)
    return SpeechTransformer(dims)


@pytest.mark.parametrize("subsampling", [4, 8])
def test_asr_encoder_padding_invariance(subsampling):
    model = _tiny_asr(subsampling=subsampling).double().eval()
    x = torch.randn(2, 80, 16, dtype=torch.float64)
    memory, mask = model.encode(x, torch.tensor([50, 80]))
    alone, alone_mask = model.encode(x[:1, :50], torch.tensor([50]))
    n = int(alone_mask.sum())
    assert int(mask[0].sum()) == n
    assert (memory[0, :n] - alone[0]).abs().max() < 1e-9


@pytest.mark.parametrize("attention", ["dot", "location", "monotonic"])
def test_asr_incremental_decoder_matches_teacher_forcing(attention):
    model = _tiny_asr(attention).double().eval()
    x = torch.randn(2, 60, 16, dtype=torch.float64)
    memory, mask = model.encode(x, torch.tensor([60, 44]))
    tokens = torch.tensor([[1, 3, 4, 5, 6], [1, 7, 8, 9, 2]])
    full, _ = model(memory, mask, tokens)
    state = model.init_decoder(memory, mask)
    for t in range(tokens.size(1)):
        step, state = model.decode_step(tokens[:, t:t + 1], state)
        assert (step - full[:, t]).abs().max() < 1e-6


def test_asr_loss_and_gradients_finite():
    model = _tiny_asr().train()
    x = torch.randn(3, 70, 16)
    losses = model.loss(x, torch.tensor([70, 50, 40]), torch.tensor([[3, 4, 5], [6, 7, 0], [8, 0, 0]]),
                        torch.tensor([3, 2, 1]))
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@torch.no_grad()
def test_distillation_adds_the_divergence_from_the_teacher_on_its_rows_only():
    """A model distilling from itself adds nothing; from another model, the KL divergence of
    the distilled rows, computed by hand here, weighted as CTC and attention are."""
    student = _tiny_asr().eval()
    torch.manual_seed(1)
    other = SpeechTransformer(student.dims).eval()
    x, lengths = torch.randn(3, 70, 16), torch.tensor([70, 50, 40])
    targets = torch.tensor([[3, 4, 5], [6, 7, 0], [8, 0, 0]])
    target_lengths = torch.tensor([3, 2, 1])
    batch = (x, lengths, targets, target_lengths)
    plain = student.loss(*batch)["loss"]
    itself = student.soft_targets(*batch, rows=torch.tensor([True, True, True]))
    assert float(student.loss(*batch, teacher=itself, distil_weight=1.0)["loss"]) == pytest.approx(
        float(plain), abs=1e-4)
    rows = torch.tensor([True, False, True])
    teacher = other.soft_targets(*batch, rows=rows)
    losses = student.loss(*batch, teacher=teacher, distil_weight=0.5)

    memory, mask = student.encode(x, lengths)
    tokens_in = torch.cat([torch.ones(3, 1, dtype=torch.long), targets], 1)
    by_hand = []
    for mine, theirs, valid in ((student.ctc_logprobs(memory), teacher.ctc, mask),
                                (student(memory, mask, tokens_in)[0], teacher.decoder,
                                 torch.arange(4)[None] <= target_lengths[:, None])):
        kl = (theirs.exp() * (theirs - mine)).sum(-1)
        by_hand.append(float(kl[valid & rows[:, None]].sum()) / 3)
    assert float(losses["distil_ctc"]) == pytest.approx(by_hand[0], rel=1e-4)
    assert float(losses["distil_attention"]) == pytest.approx(by_hand[1], rel=1e-4)
    expected = 0.5 * (0.3 * by_hand[0] + 0.7 * by_hand[1])
    assert float(losses["loss"] - plain) == pytest.approx(expected, rel=1e-4)
    none = other.soft_targets(*batch, rows=torch.tensor([False, False, False]))
    assert float(student.loss(*batch, teacher=none, distil_weight=0.5)["loss"]) == pytest.approx(
        float(plain))


def test_reverse_padded_reverses_each_row_within_its_length():
    tokens = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 10, 11]])
    reversed_ = reverse_padded(tokens, torch.tensor([3, 2, 4]))
    assert reversed_.tolist() == [[5, 4, 3, 0], [7, 6, 0, 0], [11, 10, 9, 8]]


def test_right_to_left_scores_equal_its_step_by_step_decoding():
    """`score_reversed` (teacher forcing, a batch) is the sum of the step model's log-probs
    over the reversed tokens and EOS, hypothesis by hypothesis."""
    model = _tiny_asr(r2l_layers=2).double().eval()
    memory, mask = model.encode(torch.randn(2, 60, 16, dtype=torch.float64), torch.tensor([60, 44]))
    hyps = [[3, 4, 5], [6, 7]]
    batch = model.score_reversed(memory, mask, hyps)
    steps = RightToLeftSteps(model)
    for b, hyp in enumerate(hyps):
        state = steps.init_decoder(memory[b:b + 1], mask[b:b + 1])
        total = 0.0
        for token_in, token_out in zip([1, *hyp[::-1]], [*hyp[::-1], EOS]):
            with torch.no_grad():
                logprobs, state = steps.decode_step(torch.tensor([[token_in]]), state)
            total += float(logprobs[0, token_out])
        assert float(batch[b]) == pytest.approx(total, abs=1e-5)  # log-softmax runs in fp32


def test_right_to_left_decoder_starts_as_a_copy_and_trains_with_the_joint_loss():
    model = _tiny_asr(r2l_layers=2)
    memory, mask = model.encode(torch.randn(2, 60, 16), torch.tensor([60, 44]))
    tokens = torch.tensor([[1, 3, 4, 5], [1, 6, 7, 2]])
    def both():
        return model(memory, mask, tokens)[0], model(memory, mask, tokens, reverse=True)[0]

    assert not torch.allclose(*both())
    model.init_r2l_from_l2r()
    assert torch.equal(*both())
    targets = torch.tensor([[3, 4, 5], [6, 7, 0]])
    losses = model.loss(torch.randn(2, 60, 16), torch.tensor([60, 44]), targets, torch.tensor([3, 2]),
                        reverse_weight=0.3)
    losses["loss"].backward()
    assert torch.isfinite(losses["attention_r2l"])
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.r2l.parameters())
    with pytest.raises(ValueError, match="right-to-left"):
        _tiny_asr().score_reversed(memory, mask, [[3]])


@pytest.mark.slow
def test_tiny_asr_overfits_eight_utterances():
    """Eight 'utterances' whose frames encode their tokens: WER 0 after a short training."""
    torch.manual_seed(0)
    model = _tiny_asr()
    patterns = torch.randn(12, 16) * 2
    utts = []
    g = torch.Generator().manual_seed(1)
    for _ in range(8):
        tokens = torch.randint(2, 12, (int(torch.randint(3, 6, (1,), generator=g)),), generator=g)
        frames = torch.cat([patterns[t].repeat(8, 1) + 0.1 * torch.randn(8, 16, generator=g)
                            for t in tokens])
        utts.append((frames, tokens))
    x = torch.nn.utils.rnn.pad_sequence([u[0] for u in utts], batch_first=True)
    lengths = torch.tensor([u[0].size(0) for u in utts])
    targets = torch.nn.utils.rnn.pad_sequence([u[1] for u in utts], batch_first=True)
    target_lengths = torch.tensor([u[1].numel() for u in utts])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(250):
        loss = model.loss(x, lengths, targets, target_lengths, label_smoothing=0.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    memory, mask = model.encode(x, lengths)
    from models.ctc import CTCPrefixScorer

    for beam in (1, 4):
        scorers = {"decoder": DecoderScorer(model, memory, mask),
                   "ctc": CTCPrefixScorer(model.ctc_logprobs(memory), mask.sum(1), BLANK, EOS)}
        hyps = decode(scorers, {"decoder": 0.7, "ctc": 0.3}, 1, EOS, mask.sum(1),
                      DecodingOptions(beam_size=beam))
        assert [h[0].tokens for h in hyps] == [u[1].tolist() for u in utts]
    assert ctc_greedy(model.ctc_logprobs(memory), mask.sum(1), BLANK) == [u[1].tolist() for u in utts]


def test_tiny_right_to_left_decoder_learns_on_a_frozen_model():
    """The right-to-left decoder alone, on a frozen random encoder, learns to spell eight
    targets from their ends: greedy search with it, reversed, gives them back."""
    model = _tiny_asr(r2l_layers=2)
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(30, 60, (8,), generator=g)
    x = torch.randn(8, 60, 16, generator=g)
    target_lengths = torch.randint(2, 6, (8,), generator=g)
    targets = torch.randint(2, 12, (8, 5), generator=g) * lengths_mask(target_lengths, 5)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("r2l."))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("r2l.")}
    with torch.no_grad():
        memory, mask = model.encode(x, lengths)
    for _ in range(150):
        loss, _ = model.attention_loss(memory, mask, targets, target_lengths, 0.0, reverse=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    model.eval()
    hyps = decode({"decoder": DecoderScorer(RightToLeftSteps(model), memory, mask)}, {}, 1, EOS,
                  mask.sum(1), DecodingOptions(beam_size=1, max_len_ratio=1.0))
    spelled = [h[0].tokens[::-1] for h in hyps]
    assert spelled == [t[:n].tolist() for t, n in zip(targets, target_lengths)]


def lengths_mask(lengths, width):
    return (torch.arange(width)[None, :] < lengths[:, None]).long()
