"""The subword LSTM language model and its beam-search scorer."""

import pytest
import torch

from models.decoding import DecodingOptions, decode
from models.lm import RNNLM, LMDims, LMScorer

DIMS = LMDims(vocab_size=12, d_model=16, n_layers=2, dropout=0.0, sos=1, eos=1, pad=0)


@pytest.fixture()
def lm():
    torch.manual_seed(0)
    return RNNLM(DIMS).eval()


def test_scorer_steps_equal_the_full_forward(lm):
    tokens = torch.tensor([[1, 4, 7, 3, 9], [1, 2, 2, 5, 11]])  # SOS first
    full = lm(tokens)[0].log_softmax(-1)  # (B, T, V)
    scorer, state = LMScorer(lm), None
    for t in range(tokens.size(1)):
        step, state = scorer.score(tokens[:, : t + 1], state)
        torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=1e-5)
        state = scorer.select(state, torch.arange(2), tokens[:, t])


def test_padding_does_not_change_a_sentence_loss(lm):
    short = torch.tensor([[4, 7, 3]])
    alone = lm.loss(short, torch.tensor([3]))
    padded = lm.loss(torch.tensor([[4, 7, 3, 0, 0], [2, 5, 6, 8, 9]]), torch.tensor([3, 5]))
    # the batch loss is a token-weighted mean: undo it for the second sentence
    other = lm.loss(torch.tensor([[2, 5, 6, 8, 9]]), torch.tensor([5]))
    mixed = (alone["loss"] * 4 + other["loss"] * 6) / 10
    torch.testing.assert_close(padded["loss"], mixed)
    padded["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in lm.parameters() if p.grad is not None)


def test_beam_search_scores_are_the_lm_sentence_logprobs(lm):
    """Decoding with the LM alone: every returned hypothesis's summed score is the LM's
    probability of that sentence, so the scorer's state follows each hypothesis through the
    beam's reordering."""
    hyps = decode({"lm": LMScorer(lm)}, {}, DIMS.sos, DIMS.eos, torch.tensor([6, 6]),
                  DecodingOptions(beam_size=3, n_best=3, length_penalty=0.0, max_len_offset=0))
    for per_utterance in hyps:
        assert per_utterance
        for h in per_utterance:
            if not h.hit_max_len:
                assert h.logprob == pytest.approx(lm.sentence_logprob(h.tokens), abs=1e-4)


def test_fusion_moves_the_search_toward_the_lm(lm):
    """A flat 'decoder' leaves the choice to the LM: with its weight the best hypothesis is the
    LM's greedy sentence."""
    class Flat(LMScorer):
        def score(self, tokens, state):
            return torch.zeros(tokens.size(0), DIMS.vocab_size), None

        def select(self, state, hyp, token):
            return None

    opts = DecodingOptions(beam_size=1, max_len_offset=0)
    lengths = torch.tensor([5])
    fused = decode({"decoder": Flat(lm), "lm": LMScorer(lm)}, {"lm": 0.5}, 1, 1, lengths, opts)
    alone = decode({"lm": LMScorer(lm)}, {}, 1, 1, lengths, opts)
    assert fused[0][0].tokens == alone[0][0].tokens
