"""The soft lexicon constraint: what each next piece costs, and its effect on beam search."""

import pytest
import torch

from models.decoding import DecodingOptions, Scorer, decode
from models.lexicon import Lexicon, LexiconScorer

EOS = 1
# ids 0 and 1 spell nothing (blank, SOS/EOS); "\u2581" marks a piece that begins a word
PIECES = [None, None, "\u2581c", "at", "s", "\u2581d", "og", "x", "\u2581", "a", "t"]
ID = {p: i for i, p in enumerate(PIECES) if p is not None}
LEXICON = Lexicon(["cat", "cats", "dog"])


def _costs(scorer, *words):
    """Row of next-token costs after each hypothesis's pieces."""
    state = None
    rows, state = scorer.score(torch.zeros(len(words), 1, dtype=torch.long), state)
    for step in range(max(len(w) for w in words)):
        tokens = torch.tensor([ID[w[step]] if step < len(w) else EOS for w in words])
        state = scorer.select(state, torch.arange(len(words)), tokens)
        rows, state = scorer.score(torch.zeros(len(words), 1, dtype=torch.long), state)
    return [dict(zip(PIECES[2:], r[2:].tolist())) | {"eos": r[EOS].item()} for r in rows]


def test_prefixes_and_whole_words_cost_nothing():
    scorer = LexiconScorer(LEXICON, PIECES, EOS)
    start, after_c, after_cat = _costs(scorer, [], ["\u2581c"], ["\u2581c", "at"])
    assert start["\u2581c"] == start["\u2581d"] == start["eos"] == 0  # an empty output is no word
    assert start["at"] == -1  # "at" begins no lexicon word
    assert after_c["at"] == 0 and after_c["a"] == 0 and after_c["x"] == -1
    assert after_c["\u2581d"] == -1 and after_c["eos"] == -1  # "c" ended before it is a word
    assert after_cat["s"] == 0 and after_cat["\u2581d"] == 0 and after_cat["eos"] == 0
    assert after_cat["og"] == -1


def test_the_same_word_spelled_with_other_pieces_costs_the_same():
    scorer = LexiconScorer(LEXICON, PIECES, EOS)
    (pieces_at, letters) = _costs(scorer, ["\u2581c", "at"], ["\u2581c", "a", "t"])
    assert pieces_at == letters


def test_a_word_outside_the_lexicon_pays_once():
    scorer = LexiconScorer(LEXICON, PIECES, EOS)
    (after_cx, after_cxx) = _costs(scorer, ["\u2581c", "x"], ["\u2581c", "x", "x"])
    for row in (after_cx, after_cxx):
        assert row["x"] == row["at"] == row["eos"] == 0  # already paid: no more cost in this word
        assert row["\u2581d"] == 0 and row["\u2581"] == 0  # the next word starts afresh
        assert row["\u2581c"] == 0


def test_ending_a_rare_word_costs_rare_cost():
    lexicon = Lexicon(["cat", "cats", "dog"], rare=["cat", "bird"])  # "bird" is no word of it
    assert lexicon.rare == {"cat"}
    plain = LexiconScorer(lexicon, PIECES, EOS)
    scorer = plain.with_rare_cost(0.25)
    (after_cat, after_cats, after_dog) = _costs(scorer, ["\u2581c", "at"], ["\u2581c", "at", "s"],
                                                ["\u2581d", "og"])
    assert after_cat["eos"] == after_cat["\u2581d"] == -0.25  # "cat" ends: rare
    assert after_cat["s"] == 0 and after_cat["x"] == -1  # going on to "cats" (or leaving) is not
    assert after_cats["eos"] == after_dog["eos"] == 0
    assert _costs(plain, ["\u2581c", "at"])[0]["eos"] == 0  # the copy did not change the original
    assert scorer._rows is plain._rows  # one cache


def test_words_added_for_a_job_cost_nothing_and_leave_the_lexicon_alone():
    plain = LexiconScorer(LEXICON, PIECES, EOS)
    before = _costs(plain, ["\u2581c", "x"])[0]
    scorer = plain.with_words(["cax", "dog"])  # "dog" is a word already
    assert "cax" in scorer.lexicon and "ca" in scorer.lexicon.prefixes
    assert len(scorer.lexicon) == len(LEXICON) + 1
    (after_c, after_cax) = _costs(scorer, ["\u2581c"], ["\u2581c", "a", "x"])
    assert after_c["a"] == 0 and after_c["x"] == -1  # "cx" is still no word
    assert after_cax["eos"] == after_cax["\u2581d"] == 0  # "cax" ends as a word
    assert _costs(plain, ["\u2581c", "x"])[0] == before and "cax" not in plain.lexicon
    assert scorer._rows is not plain._rows
    assert plain.with_words(["cat", ""]) is plain  # nothing new: the same scorer


def test_the_row_cache_is_bounded():
    scorer = LexiconScorer(Lexicon(["ab", "ac", "ad"]), [None, None, "\u2581a", "b", "c", "d"], EOS,
                           max_cached=3)
    for word in ("a", "ab", "ac", "ad"):
        scorer._row(word)
    assert len(scorer._rows) <= 3
    assert scorer._row("ab")[EOS] == 0 and scorer._row("a")[EOS] == -1


class _Prefers(Scorer):
    """A 'decoder' that prefers one sentence, token by token, and flat afterwards."""

    def __init__(self, sentence: list[int], margin: float = 1.0):
        self.sentence, self.margin = sentence, margin

    def init_state(self, beam_size):
        return None

    def score(self, tokens, state):
        step = tokens.size(1) - 1
        logits = torch.zeros(tokens.size(0), len(PIECES))
        logits[:, 0] = -1e9  # never blank
        target = self.sentence[step] if step < len(self.sentence) else EOS
        logits[:, target] += self.margin
        return logits.log_softmax(-1), None

    def select(self, state, hyp, token):
        return None


@pytest.mark.parametrize("weight, expected", [(0.0, ["\u2581c", "x", "t"]), (3.0, ["\u2581c", "a", "t"])])
def test_weighted_lexicon_turns_a_near_miss_into_a_word(weight, expected):
    """The 'decoder' spells "cxt" with a small margin; the lexicon, weighted, makes it "cat"."""
    preferred = [ID["\u2581c"], ID["x"], ID["t"]]
    scorers = {"decoder": _Prefers(preferred), "lexicon": LexiconScorer(LEXICON, PIECES, EOS)}
    hyps = decode(scorers, {"lexicon": weight}, 1, EOS, torch.tensor([10, 10]),
                  DecodingOptions(beam_size=6, max_len_offset=0))
    for per_utterance in hyps:
        assert [PIECES[t] for t in per_utterance[0].tokens] == expected
