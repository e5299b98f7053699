"""Contextual biasing: a job's hotwords (names, terms) favoured by the beam search.

A recogniser spells a name it never heard as the everyday words nearest to its sound. Given
the words a clip is likely to hold, the search can prefer them without being forced to: the
scorer holds a prefix trie over the hotwords' token sequences and follows, per hypothesis, the
trie node that its latest tokens have reached. A token that extends a match scores +1; a token
that breaks it takes back everything the unfinished match was given, so a prefix that goes
nowhere nets zero and only whole hotwords pay (the "cancel" of WeNet's context graph and
icefall's `ContextGraph`). With a weight, each paid token is worth that.

The first token of a match is not paid: a hotword of L tokens earns L - 1. That token is a
word-start piece ("▁b", "▁tr") that most words beginning with that sound share, and a list of a
hundred names begins with most of them: paid, it pulls every word of every sentence toward the
hotwords' spellings and crowds the right hypotheses out of the beam, although each unfinished
match is taken back later. From its second token on, a match is specific. (Paying the first
token once the hotword is whole, the same total as +1 a token, makes whole-hotword insertions
likelier where the audio holds none; a one-token hotword, a common piece the model spells
anyway, earns nothing either way.)

A hotword is matched as whole words: its last token must be followed by a token that begins a
word, or by EOS ("okonkwo" pays, "okonkwos" does not). Matches start at word starts and do not
overlap: the token that breaks a match may begin a new one, but a hotword that starts inside a
longer hotword's partial match (a multi-word hotword's later words) is not looked for there.

The hotwords' words also join the search's word list (models.lexicon, `with_words`): a name
the job expects is no misspelling, so the bonus need not outbid the list's cost of an unknown
word, and a weight low enough to leave sentences without the names alone still finds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from models.decoding import Scorer
from models.lexicon import WORD_START


def _paid(depth: int) -> int:
    """What a match of `depth` tokens has been paid: all but its first token."""
    return max(depth - 1, 0)


class HotwordTrie:
    """The hotwords' token sequences as a trie; node 0 is the root (nothing matched).

    Per node: `children` (token id -> node), `depth` (tokens matched on the way to it),
    `ends` (a hotword's last token leads to it) and `kept` (of `depth`, what a break there
    keeps: the tokens of the longest hotword on its path that the end of a word followed).
    `ends_word[t]`: token t ends the word being spelled (it begins the next, or spells no text).
    """

    def __init__(self, sequences: Iterable[Sequence[int]], ends_word: Sequence[bool]):
        self.children: list[dict[int, int]] = [{}]
        self.depth, self.ends = [0], [False]
        for tokens in sequences:
            node = 0
            for token in tokens:
                if token not in self.children[node]:
                    self.children[node][token] = len(self.children)
                    self.children.append({})
                    self.depth.append(self.depth[node] + 1)
                    self.ends.append(False)
                node = self.children[node][token]
            self.ends[node] = node != 0
        self.kept = [0] * len(self.children)
        stack = [0]
        while stack:  # parents before children
            node = stack.pop()
            for token, child in self.children[node].items():
                whole = self.ends[node] and ends_word[token]
                self.kept[child] = self.depth[node] if whole else self.kept[node]
                stack.append(child)

    def __len__(self) -> int:
        """The token sequences held (one added twice counts once)."""
        return sum(self.ends)


class HotwordScorer(Scorer):
    """Per hypothesis, +1 for each token of a hotword match after its first, and a break taking
    back what the unfinished match was given.

    Holds no per-utterance data: the state is, per hypothesis, its trie node, so one scorer
    serves every batch decoded with the same hotwords.

    Args:
        sequences: each hotword's token ids, as the hotword is spelled mid-sentence (its first
            token begins a word); a hotword may come in several spellings.
        pieces: each token id's text, a piece that begins a word starting with WORD_START;
            None for ids that spell no text (blank, SOS/EOS, the unknown piece), which end the
            word being spelled as a word start does (the unknown piece is written " ⁇ ").
        eos: the end-of-sentence id, which ends the last word: an unfinished match is taken
            back on it.
    """

    def __init__(self, sequences: Iterable[Sequence[int]], pieces: Sequence[str | None], eos: int):
        self.pieces, self.eos = list(pieces), eos
        V = len(self.pieces)
        # the tokens that end the word being spelled: word starts, EOS and the textless ids
        ends = [p is None or p.startswith(WORD_START) for p in self.pieces]
        self._ends_word = ends
        sequences = [list(tokens) for tokens in sequences]
        for tokens in sequences:
            if any(not 0 <= t < V or self.pieces[t] is None or t == eos for t in tokens):
                raise ValueError(f"a hotword's tokens must each spell text: {tokens}")
            if tokens and not ends[tokens[0]]:
                raise ValueError(f"a hotword's first token must begin a word: {tokens}")
        self.trie = trie = HotwordTrie(sequences, ends)
        # per node: what its match has been paid (all but the first token), and what it keeps
        # when the word being spelled ends there (all, where a hotword ends there) or goes on
        # past it (a whole hotword earlier on its path, if any)
        self._paid = [_paid(d) for d in trie.depth]
        self._kept_ended = [_paid(d if end else kept)
                            for d, end, kept in zip(trie.depth, trie.ends, trie.kept)]
        self._kept_going_on = [_paid(kept) for kept in trie.kept]
        self._boundary = torch.tensor(ends)  # (V,)

    def init_state(self, beam_size):
        return None  # the batch size is known at the first `score`

    def score(self, tokens, state):
        if state is None:
            state = [0] * tokens.size(0)
        trie = self.trie
        paid = torch.tensor([float(self._paid[s]) for s in state])[:, None]  # (N, 1)
        ended = torch.tensor([float(self._kept_ended[s]) for s in state])[:, None]
        goes_on = torch.tensor([float(self._kept_going_on[s]) for s in state])[:, None]
        # a token that is no next token of the match settles it: what it keeps, less what it
        # was paid
        rows = torch.where(self._boundary[None, :], ended, goes_on) - paid  # (N, V)
        extend = [(i, t) for i, s in enumerate(state) if s for t in trie.children[s]]
        if extend:  # (from the root, a match's first token: 0, as every other)
            i, t = zip(*extend)
            rows[list(i), list(t)] = 1.0
        return rows.to(tokens.device), state

    def select(self, state, hyp, token):
        return [self._next(state[h], t) for h, t in zip(hyp.tolist(), token.tolist())]

    def _next(self, node: int, token: int) -> int:
        child = self.trie.children[node].get(token)
        if child is not None:
            return child
        return self.trie.children[0].get(token, 0) if self._ends_word[token] else 0
