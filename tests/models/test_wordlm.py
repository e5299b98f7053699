"""The word n-gram scorer: what each next piece costs, and its effect on beam search."""

import math

import pytest
import torch

from models.decoding import DecodingOptions, Scorer, decode
from models.wordlm import SENTENCE_END, SENTENCE_START, WordLMScorer

EOS = 1
# ids 0 and 1 spell nothing (blank, SOS/EOS); "\u2581" marks a piece that begins a word
PIECES = [None, None, "\u2581the", "\u2581wind", "\u2581bl", "ew", "ue", "\u2581red"]
ID = {p: i for i, p in enumerate(PIECES) if p is not None}


class _Bigram:
    """A toy bigram model: P(word | previous word) from a table, 0.01 for anything else."""

    order = 2
    TABLE = {("<s>", "the"): 0.5, ("the", "wind"): 0.5, ("wind", "blew"): 0.4,
             ("wind", "blue"): 0.01, ("blew", "</s>"): 0.9, ("blue", "</s>"): 0.9}

    def __init__(self):
        self.calls = 0

    def logprob(self, word, history):
        self.calls += 1
        assert len(history) == 1
        return math.log(self.TABLE.get((history[-1], word), 0.01))


def _rows(scorer, *sentences):
    """Each hypothesis's row of next-token scores after its pieces."""
    state = None
    rows, state = scorer.score(torch.zeros(len(sentences), 1, dtype=torch.long), state)
    for step in range(max(len(s) for s in sentences)):
        tokens = torch.tensor([ID[s[step]] if step < len(s) else EOS for s in sentences])
        state = scorer.select(state, torch.arange(len(sentences)), tokens)
        rows, state = scorer.score(torch.zeros(len(sentences), 1, dtype=torch.long), state)
    return rows, state


def test_a_word_is_charged_on_the_token_that_ends_it():
    scorer = WordLMScorer(_Bigram(), PIECES, EOS, letter_logprob=0.0)
    rows, state = _rows(scorer, [], ["\u2581the"], ["\u2581the", "\u2581wind", "\u2581bl"])
    start, after_the, after_bl = rows
    assert start[ID["\u2581the"]] == 0 and start[ID["ew"]] == 0  # no word has ended yet
    assert start[EOS] == pytest.approx(math.log(0.01))  # an empty sentence: P(</s> | <s>)
    assert after_the[ID["ew"]] == 0  # "the" goes on: nothing ends
    assert after_the[ID["\u2581wind"]] == pytest.approx(math.log(0.5))  # P(the | <s>)
    assert after_the[EOS] == pytest.approx(math.log(0.5) + math.log(0.01))  # ... and P(</s> | the)
    assert state[2] == (("wind",), "bl")  # the history keeps order - 1 words
    assert after_bl[ID["\u2581red"]] == pytest.approx(math.log(0.01))  # "bl" is no word of the table


def test_context_decides_between_spellings():
    scorer = WordLMScorer(_Bigram(), PIECES, EOS, letter_logprob=0.0)
    (blew, blue), _ = _rows(scorer, ["\u2581the", "\u2581wind", "\u2581bl", "ew"],
                            ["\u2581the", "\u2581wind", "\u2581bl", "ue"])
    assert blew[EOS] == pytest.approx(math.log(0.4) + math.log(0.9))
    assert blue[EOS] == pytest.approx(math.log(0.01) + math.log(0.9))


def test_the_word_bonus_is_added_to_every_ended_word_but_not_to_the_sentence_end():
    plain = WordLMScorer(_Bigram(), PIECES, EOS, letter_logprob=0.0)
    scorer = plain.with_word_bonus(2.0)
    (row,), _ = _rows(scorer, ["\u2581the", "\u2581wind"])
    assert row[ID["\u2581bl"]] == pytest.approx(math.log(0.5) + 2.0)
    assert row[EOS] == pytest.approx(math.log(0.5) + 2.0 + math.log(0.01))
    assert row[ID["ew"]] == 0
    (plain_row,), _ = _rows(plain, ["\u2581the", "\u2581wind"])
    assert plain_row[ID["\u2581bl"]] == pytest.approx(math.log(0.5))  # the copy left it alone
    assert scorer._cache is plain._cache


def _path_score(scorer, pieces):
    """What the scorer gives one hypothesis spelling `pieces` and then EOS, summed."""
    total, state = 0.0, None
    for token in [ID[p] for p in pieces] + [EOS]:
        row, state = scorer.score(torch.zeros(1, 1, dtype=torch.long), state)
        total += row[0, token].item()
        state = scorer.select(state, torch.zeros(1, dtype=torch.long), torch.tensor([token]))
    return total


def test_letters_pay_as_a_word_is_spelled_and_its_end_settles_the_difference():
    scorer = WordLMScorer(_Bigram(), PIECES, EOS, letter_logprob=-1.0)
    (start, after_the), _ = _rows(scorer, [], ["\u2581the"])
    assert start[ID["\u2581the"]] == -3.0 and start[ID["\u2581bl"]] == -2.0  # letters, not the mark
    assert after_the[ID["ew"]] == -2.0  # "the" goes on as "theew": two more letters
    assert after_the[ID["\u2581wind"]] == pytest.approx(math.log(0.5) + 3.0 - 4.0)  # settle, spell
    sentence = ["\u2581the", "\u2581wind", "\u2581bl", "ew"]
    exact = math.log(0.5) + math.log(0.5) + math.log(0.4) + math.log(0.9)  # the total is unchanged
    assert _path_score(scorer, sentence) == pytest.approx(exact)
    no_lookahead = WordLMScorer(_Bigram(), PIECES, EOS, letter_logprob=0.0)
    assert _path_score(no_lookahead, sentence) == pytest.approx(exact)


def test_scores_are_cached_per_history_and_word():
    lm = _Bigram()
    scorer = WordLMScorer(lm, PIECES, EOS)
    _rows(scorer, *[["\u2581the", "\u2581wind"]] * 6)
    # six identical hypotheses: P(</s> | <s>), P(the | <s>), P(</s> | the), P(wind | the), ...
    assert lm.calls == 5
    _rows(scorer, *[["\u2581the", "\u2581wind"]] * 6)
    assert lm.calls == 5
    bounded = WordLMScorer(lm, PIECES, EOS, max_cached=2)
    _rows(bounded, *[["\u2581the", "\u2581wind"]] * 6)
    assert len(bounded._cache) <= 2


def test_the_first_history_is_the_sentence_start():
    queries = []

    class Trigram(_Bigram):
        order = 3

        def logprob(self, word, history):
            queries.append((history, word))
            return -1.0

    scorer = WordLMScorer(Trigram(), PIECES, EOS)
    _, state = _rows(scorer, ["\u2581the", "\u2581wind", "\u2581red"])
    assert state[0] == (("the", "wind"), "red")
    assert ((SENTENCE_START,), "the") in queries and ((SENTENCE_START, "the"), "wind") in queries
    assert (("the", "wind"), "red") in queries and (("wind", "red"), SENTENCE_END) in queries


class _Spells(Scorer):
    """A 'decoder' spelling "the wind bl", then a slight preference for "ue" over "ew"."""

    SENTENCE = [ID["\u2581the"], ID["\u2581wind"], ID["\u2581bl"]]

    def init_state(self, beam_size):
        return None

    def score(self, tokens, state):
        step = tokens.size(1) - 1
        logits = torch.full((tokens.size(0), len(PIECES)), -1e9)
        if step < 3:
            logits[:, self.SENTENCE[step]] = 0.0
        elif step == 3:
            logits[:, ID["ue"]], logits[:, ID["ew"]] = 0.5, 0.0
        else:
            logits[:, EOS] = 0.0
        return logits.log_softmax(-1), None

    def select(self, state, hyp, token):
        return None


@pytest.mark.parametrize("weight, expected", [(0.0, "ue"), (1.0, "ew")])
def test_weighted_word_lm_turns_a_homophone_into_the_word_context_wants(weight, expected):
    scorers = {"decoder": _Spells(), "word_lm": WordLMScorer(_Bigram(), PIECES, EOS)}
    hyps = decode(scorers, {"word_lm": weight}, 1, EOS, torch.tensor([10, 10]),
                  DecodingOptions(beam_size=4, max_len_offset=0))
    for per_utterance in hyps:
        assert PIECES[per_utterance[0].tokens[3]] == expected
