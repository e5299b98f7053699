import pytest
import torch

from models.decoding import (
    BeamSearch,
    DecoderScorer,
    DecodingOptions,
    GreedySearch,
    LengthBonus,
    decode,
)
from models.seq2seq import Seq2SeqDims, TokenTransformer

PAD, SOS, EOS = 0, 1, 2


def _batch(n, vocab_lo, vocab_hi, min_len=3, max_len=8, reverse=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    src = torch.full((n, max_len), PAD)
    tgt = torch.full((n, max_len + 1), PAD)
    for i, L in enumerate(lengths.tolist()):
        seq = torch.randint(vocab_lo, vocab_hi, (L,), generator=g)
        src[i, :L] = seq
        tgt[i, :L] = seq.flip(0) if reverse else seq
        tgt[i, L] = EOS
    return src, tgt


def _train(model, steps, reverse=False, vocab_hi=12, lr=3e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        src, tgt = _batch(64, 3, vocab_hi, reverse=reverse, seed=step + 1000)
        loss = model.loss(src, tgt)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model.eval()


def _decode(model, src, options):
    memory, mask = model.encode(src)
    scorer = DecoderScorer(model, memory, mask, src)
    return decode({"decoder": scorer}, {}, SOS, EOS, mask.sum(1), options)


def _exact_match(model, src, tgt, options):
    hyps = _decode(model, src, options)
    refs = [t[: t.tolist().index(EOS)].tolist() for t in tgt]
    return sum(h[0].tokens == r for h, r in zip(hyps, refs)) / len(refs)


@pytest.fixture(scope="module")
def reverse_model():
    torch.manual_seed(0)
    return _train(TokenTransformer(Seq2SeqDims(vocab_size=12)), 600, reverse=True)


@pytest.mark.slow
def test_toy_reverse_task_reaches_exact_match(reverse_model):
    src, tgt = _batch(100, 3, 12, reverse=True, seed=7)
    assert _exact_match(reverse_model, src, tgt, DecodingOptions(beam_size=1)) >= 0.95
    assert _exact_match(reverse_model, src, tgt, DecodingOptions(beam_size=4)) >= 0.95


@pytest.mark.parametrize("variant", ["dot", "location", "monotonic"])
def test_beam_search_at_beam_one_equals_greedy_search(variant):
    torch.manual_seed(1)
    model = TokenTransformer(Seq2SeqDims(vocab_size=12, cross_attention=variant)).eval()
    src, _ = _batch(6, 3, 12, seed=3)
    memory, mask = model.encode(src)
    runs = [decode({"decoder": DecoderScorer(model, memory, mask, src)}, {}, SOS, EOS, mask.sum(1),
                   DecodingOptions(beam_size=1), search=search)
            for search in (GreedySearch, BeamSearch)]
    greedy, beam = ([h[0] for h in hyps] for hyps in runs)
    assert [h.tokens for h in greedy] == [h.tokens for h in beam]
    assert [h.logprob for h in greedy] == pytest.approx([h.logprob for h in beam], abs=1e-4)
    assert any(len(h.tokens) > 1 for h in greedy)  # the untrained model says more than one token


def test_nbest_sorted_and_max_length_respected():
    torch.manual_seed(3)
    model = TokenTransformer(Seq2SeqDims(vocab_size=12)).eval()
    src, _ = _batch(4, 3, 12, seed=5)
    options = DecodingOptions(beam_size=5, n_best=5, max_len_ratio=0.5, max_len_offset=1)
    hyps = _decode(model, src, options)
    max_len = options.max_lengths((src != PAD).sum(1))
    for b, nbest in enumerate(hyps):
        scores = [h.score for h in nbest]
        assert scores == sorted(scores, reverse=True)
        assert 1 <= len(nbest) <= 5
        for h in nbest:
            assert len(h.tokens) + (0 if h.hit_max_len else 1) <= max_len[b]


def test_beam_search_batch_equals_one_by_one(reverse_model):
    src, _ = _batch(5, 3, 12, reverse=True, seed=11)
    options = DecodingOptions(beam_size=3, n_best=3)
    batched = _decode(reverse_model, src, options)
    for i in range(5):
        L = int((src[i] != PAD).sum())
        alone = _decode(reverse_model, src[i:i + 1, :L], options)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[i]]


def test_length_bonus_is_a_weighted_scorer(reverse_model):
    """A uniform per-token bonus never changes a step's ranking, but it decides between finished
    hypotheses of different lengths: a large bonus picks the longest, a large malus the shortest."""
    src, _ = _batch(6, 3, 12, reverse=True, seed=12)
    memory, mask = reverse_model.encode(src)
    options = DecodingOptions(beam_size=3, n_best=3, length_penalty=0.0)
    for weight, pick in ((50.0, max), (-50.0, min)):
        scorers = {"decoder": DecoderScorer(reverse_model, memory, mask, src), "length": LengthBonus(12)}
        hyps = decode(scorers, {"decoder": 1.0, "length": weight}, SOS, EOS, mask.sum(1), options)
        for nbest in hyps:
            assert len(nbest[0].tokens) == pick(len(h.tokens) for h in nbest)


def test_options_are_validated():
    with pytest.raises(ValueError):
        DecodingOptions(beam_size=0)
    with pytest.raises(ValueError):
        DecodingOptions(beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="unknown scorers"):
        decode({}, {"lm": 1.0}, SOS, EOS, torch.tensor([3]), DecodingOptions())


def _with_oov(src, tgt, rate, seed):
    """Replace a share of the content tokens by out-of-vocabulary ids 12..23, in both."""
    g = torch.Generator().manual_seed(seed)
    oov = (torch.rand(src.shape, generator=g) < rate) & (src >= 4)
    ids = torch.randint(12, 24, src.shape, generator=g)
    src = torch.where(oov, ids, src)
    tgt = tgt.clone()
    tgt[:, : src.size(1)] = torch.where(tgt[:, : src.size(1)] >= 4, src, tgt[:, : src.size(1)])
    return src, tgt


@pytest.mark.slow
def test_copy_mechanism_copies_out_of_vocabulary_tokens():
    """Ids 12..23 have no embedding (they read as UNK) and no output logit: only the copy
    distribution can emit them. Every test sequence holds at least one."""
    def train(model, steps):
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for step in range(steps):
            src, tgt = _with_oov(*_batch(64, 4, 12, seed=step + 1000), rate=0.3, seed=step)
            loss = model.loss(src, tgt)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.eval()

    src, tgt = _with_oov(*_batch(100, 4, 12, seed=9), rate=0.3, seed=9)
    keep = (src >= 12).any(dim=1)
    src, tgt = src[keep], tgt[keep]
    results = {}
    for copy in (False, True):
        torch.manual_seed(0)
        model = train(TokenTransformer(Seq2SeqDims(vocab_size=12, copy=copy)), 400)
        results[copy] = _exact_match(model, src, tgt, DecodingOptions(beam_size=1))
    assert results[True] >= 0.9
    assert results[False] == 0.0  # it can only say UNK where an OOV token stands
