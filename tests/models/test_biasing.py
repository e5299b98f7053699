"""HotwordScorer: whole hotwords pay from their second token, broken prefixes net zero, shared
prefixes, beam reordering, and what it does inside `decode`."""

import pytest
import torch

from models.biasing import HotwordScorer, HotwordTrie
from models.decoding import DecodingOptions, Scorer, decode

EOS = 1
PIECES = [None, None, "▁new", "▁yo", "rk", "ark", "▁the", "s", "▁ok", "on", "kwo", None, "▁a"]
(NEW, YO, RK, ARK, THE, S, OK, ON, KWO, UNK, A) = range(2, 13)
HOTWORDS = [[NEW], [NEW, YO, RK], [NEW, ARK], [OK, ON, KWO]]  # new, new york, newark, okonkwo


def _scorer(hotwords=HOTWORDS) -> HotwordScorer:
    return HotwordScorer(hotwords, PIECES, EOS)


def _bonus(scorer: HotwordScorer, path: list[int]) -> float:
    """The scores one hypothesis collects along `path`, one step at a time."""
    state, total = scorer.init_state(1), 0.0
    for t, token in enumerate(path):
        rows, state = scorer.score(torch.ones(1, t + 1, dtype=torch.long), state)
        total += float(rows[0, token])
        state = scorer.select(state, torch.tensor([0]), torch.tensor([token]))
    return total


@pytest.mark.parametrize("path, bonus", [
    ([OK, ON, KWO, EOS], 2),  # the whole hotword: every token but the first
    ([THE, OK, ON, KWO, THE, EOS], 2),  # mid-sentence, ended by the next word
    ([OK, ON, THE, EOS], 0),  # a broken prefix nets zero
    ([OK, ON, EOS], 0),  # unfinished at the end of the sentence
    ([OK, ON, S, EOS], 0),  # broken inside the word
    ([OK, ON, KWO, S, EOS], 0),  # "okonkwos": not the whole word
    ([OK, UNK, ON, KWO, EOS], 0),  # the unknown piece ends the word as a word start does
    ([OK, ON, KWO, UNK, EOS], 2),
    ([OK, ON, OK, ON, KWO, EOS], 2),  # the breaking token begins the hotword again
    ([THE, A, EOS], 0),
])
def test_only_whole_hotwords_pay(path, bonus):
    assert _bonus(_scorer(), path) == bonus


@pytest.mark.parametrize("path, bonus", [
    ([NEW, EOS], 0),  # "new": one token, the unpaid first
    ([NEW, YO, RK, EOS], 2),  # "new york", the longer hotword on the same path
    ([NEW, YO, EOS], 0),  # "new" whole, "york" unfinished: only "new" keeps its bonus
    ([NEW, YO, THE, EOS], 0),
    ([NEW, ARK, EOS], 1),  # "newark"
    ([NEW, S, EOS], 0),  # "news"
    ([NEW, ARK, S, EOS], 0),  # "newarks": the word goes on past both hotwords on its path
    ([NEW, NEW, YO, RK, EOS], 2),  # "new new york"
    ([A, NEW, ARK, NEW, YO, RK, THE, EOS], 3),  # "a newark new york the"
])
def test_overlapping_hotwords_share_a_path(path, bonus):
    assert _bonus(_scorer(), path) == bonus


def test_a_match_is_paid_from_its_second_token():
    def scores(path):
        scorer, state, out = _scorer(), None, []
        for t, token in enumerate(path):
            rows, state = scorer.score(torch.ones(1, t + 1, dtype=torch.long), state)
            out.append(float(rows[0, token]))
            state = scorer.select(state, torch.tensor([0]), torch.tensor([token]))
        return out

    assert scores([OK, ON, KWO, THE]) == [0, 1, 1, 0]
    assert scores([OK, ON, THE]) == [0, 1, -1]
    assert scores([OK, ON, KWO, S]) == [0, 1, 1, -2]
    long = HotwordScorer([[NEW, YO, RK, THE, A]], PIECES, EOS)  # "new york the a"
    state = None
    for t, token in enumerate([NEW, YO, RK, THE]):
        _, state = long.score(torch.ones(1, t + 1, dtype=torch.long), state)
        state = long.select(state, torch.tensor([0]), torch.tensor([token]))
    rows, _ = long.score(torch.ones(1, 5, dtype=torch.long), state)
    assert rows[0, A] == 1 and rows[0, EOS] == -3  # all three paid tokens taken back


def test_the_trie_shares_prefixes_and_counts_each_hotword_once():
    trie = HotwordTrie(HOTWORDS + [[NEW, YO, RK]], [p is None or p.startswith("▁") for p in PIECES])
    assert len(trie) == 4
    assert len(trie.children) == 1 + 3 + 1 + 3  # root, new-yo-rk, ark, ok-on-kwo
    york = trie.children[trie.children[trie.children[0][NEW]][YO]][RK]
    assert trie.depth[york] == 3 and trie.ends[york] and trie.kept[york] == 1


def _row_after(path: list[int]) -> torch.Tensor:
    """The (V,) scores of the next token after `path`, for one hypothesis alone."""
    scorer, state = _scorer(), None
    for t, token in enumerate(path):
        _, state = scorer.score(torch.ones(1, t + 1, dtype=torch.long), state)
        state = scorer.select(state, torch.tensor([0]), torch.tensor([token]))
    return scorer.score(torch.ones(1, len(path) + 1, dtype=torch.long), state)[0][0]


def test_scores_and_states_follow_the_beam_when_it_reorders():
    """A batch of hypotheses scores as each alone, and `select` carries each chosen
    hypothesis's match into its new row, whatever row it came from."""
    scorer = _scorer()
    paths = [[OK, ON], [NEW, YO], [THE, THE]]
    state = None
    for t in range(2):
        rows, state = scorer.score(torch.ones(3, t + 1, dtype=torch.long), state)
        assert torch.equal(rows, torch.stack([_row_after(p[:t]) for p in paths]))
        state = scorer.select(state, torch.arange(3), torch.tensor([p[t] for p in paths]))
    # the beam keeps row 1 twice and row 0 once, in that order
    hyp, token = torch.tensor([1, 0, 1]), torch.tensor([RK, KWO, THE])
    state = scorer.select(state, hyp, token)
    now = [paths[h] + [t] for h, t in zip(hyp.tolist(), token.tolist())]
    rows, _ = scorer.score(torch.ones(3, 4, dtype=torch.long), state)
    assert torch.equal(rows, torch.stack([_row_after(p) for p in now]))
    assert rows[0, EOS] == 0 and rows[0, S] == -2  # "new york" whole; "new yorks": taken back
    assert rows[1, EOS] == 0 and rows[1, S] == -2  # "okonkwo" likewise
    assert torch.equal(rows[2], torch.zeros(len(PIECES)))  # "new yo the": nothing pending


def test_hotwords_must_begin_a_word_and_spell_text():
    with pytest.raises(ValueError, match="begin a word"):
        HotwordScorer([[ON, KWO]], PIECES, EOS)
    with pytest.raises(ValueError, match="spell text"):
        HotwordScorer([[OK, UNK]], PIECES, EOS)
    with pytest.raises(ValueError, match="spell text"):
        HotwordScorer([[OK, 99]], PIECES, EOS)
    assert _bonus(HotwordScorer([], PIECES, EOS), [OK, ON, KWO, EOS]) == 0


class _Acoustic(Scorer):
    """A fixed next-token distribution per step: "the ok on the" is likelier than "the ok on kwo"."""

    def __init__(self):
        V = len(PIECES)
        self.table = torch.full((5, V), -8.0)
        for step, (best, second) in enumerate([(THE, A), (OK, NEW), (ON, S), (THE, KWO), (EOS, THE)]):
            self.table[step, best], self.table[step, second] = -0.2, -1.5
        self.table = self.table.log_softmax(-1)

    def init_state(self, beam_size):
        return None

    def score(self, tokens, state):
        step = min(tokens.size(1) - 1, len(self.table) - 1)
        return self.table[step].expand(tokens.size(0), -1), None

    def select(self, state, hyp, token):
        return None


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_weight_makes_the_search_spell_the_hotword_and_weight_0_changes_nothing(beam_size):
    def best(weight=None):
        scorers = {"am": _Acoustic()}
        weights = {}
        if weight is not None:
            scorers["hotwords"], weights["hotwords"] = _scorer([[OK, ON, KWO]]), weight
        options = DecodingOptions(beam_size=beam_size, max_len_offset=6, length_penalty=0)
        hyps = decode(scorers, weights, sos=EOS, eos=EOS, source_lengths=torch.tensor([0, 0]),
                      options=options)
        return [h[0].tokens for h in hyps]

    assert best() == [[THE, OK, ON, THE]] * 2  # two utterances: the batch keeps them apart
    assert best(0.0) == best()
    assert best(2.0) == [[THE, OK, ON, KWO]] * 2
