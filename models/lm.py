"""A token language model, and the scorer that fuses it into beam search (shallow fusion).

The recogniser's attention decoder learns spelling only from the transcripts of its audio; a
language model trained on text alone, over the same subword units, knows many more words.
Beam search adds `lm_weight * log P_LM(token | prefix)` to the joint CTC/attention score
(ESPnet's RNNLM scorer; Kannan et al. 2018, "An analysis of incorporating an external
language model into a sequence-to-sequence model").

An LSTM rather than a Transformer: its whole state is (h, c), so a decoding step costs the
same at every position and reordering beams is an index, with no cache to grow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.decoding import Scorer


@dataclass(frozen=True)
class LMDims:
    vocab_size: int  # the recogniser's, reserved ids included
    d_model: int = 384
    n_layers: int = 2
    dropout: float = 0.2
    sos: int = 1  # the recogniser's SOS/EOS id: a sentence starts and ends with it
    eos: int = 1
    pad: int = 0  # the recogniser's blank, never a target

    def __post_init__(self) -> None:
        if self.vocab_size < 3 or self.d_model < 1 or self.n_layers < 1:
            raise ValueError("vocab_size must be >= 3, d_model and n_layers >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


LMState = tuple[Tensor, Tensor]  # LSTM (h, c), each (n_layers, N, d_model)


class RNNLM(nn.Module):
    """Embedding, LSTM, and an output layer tied to the embedding."""

    def __init__(self, dims: LMDims):
        super().__init__()
        self.dims = dims
        self.embed = nn.Embedding(dims.vocab_size, dims.d_model)
        self.dropout = nn.Dropout(dims.dropout)
        self.lstm = nn.LSTM(dims.d_model, dims.d_model, dims.n_layers, batch_first=True,
                            dropout=dims.dropout if dims.n_layers > 1 else 0.0)
        self.out = nn.Linear(dims.d_model, dims.vocab_size)
        self.out.weight = self.embed.weight

    def forward(self, tokens: Tensor, state: LMState | None = None) -> tuple[Tensor, LMState]:
        """tokens (B, T) -> next-token logits (B, T, V), and the state after the last token."""
        h, state = self.lstm(self.dropout(self.embed(tokens)), state)  # (B, T, C)
        return self.out(self.dropout(h)), state

    def loss(self, tokens: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Cross-entropy of each sentence and its EOS given SOS and the sentence.

        tokens (B, S) padded with `pad`, lengths (B,) -> {"loss", "tokens"}.
        """
        B, S = tokens.shape
        d = self.dims
        sos = tokens.new_full((B, 1), d.sos)
        inputs = torch.cat([sos, tokens], dim=1)  # (B, S + 1)
        targets = torch.cat([tokens, tokens.new_full((B, 1), d.pad)], dim=1)
        targets[torch.arange(B), lengths] = d.eos
        logits, _ = self(inputs)
        loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=d.pad, reduction="sum")
        n = (lengths + 1).sum()
        return {"loss": loss / n, "tokens": n.float()}

    @torch.no_grad()
    def sentence_logprob(self, tokens: list[int]) -> float:
        """log P(tokens, EOS | SOS), natural log."""
        d = self.dims
        inputs = torch.tensor([[d.sos, *tokens]], device=self.embed.weight.device)
        logits, _ = self(inputs)
        logprobs = logits[0].log_softmax(-1)  # (S + 1, V)
        targets = torch.tensor([*tokens, d.eos], device=logprobs.device)
        return float(logprobs.gather(1, targets[:, None]).sum())


class LMScorer(Scorer):
    """An `RNNLM` as a beam-search scorer: one LSTM step per call, state reordered by index.

    The state after scoring has consumed each hypothesis's last token; `select` keeps the rows
    of the surviving hypotheses, whose new token the next call consumes.
    """

    def __init__(self, lm: RNNLM):
        self.lm = lm

    def init_state(self, beam_size):
        return None  # a zero LSTM state, the state before SOS

    def score(self, tokens, state):
        logits, state = self.lm(tokens[:, -1:], state)  # (N, 1, V)
        return logits[:, 0].float().log_softmax(-1), state

    def select(self, state, hyp, token):
        h, c = state
        return h[:, hyp], c[:, hyp]
