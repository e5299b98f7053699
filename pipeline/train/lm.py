"""Recipe: a subword language model for the recogniser's beam search (`speechq train lm`).

It reads the training text (never the Harvard sentences: `speechq text-corpus` keeps them out)
and takes its units from an ASR checkpoint, so the two score the same tokens; the LM
checkpoint carries that tokenizer, and the recogniser refuses an LM whose units differ.
Validation: perplexity on a fixed 2% of the lines.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from models.lm import RNNLM, LMDims
from pipeline.data.manifests import BucketBatchSampler, pad_sequences
from pipeline.frontend.tokenizer import SubwordTokenizer
from pipeline.train.asr import hash_text


@dataclass(frozen=True)
class LMDataConfig:
    text: str  # one sentence a line
    max_batch_tokens: int = 16_000  # padded tokens per batch
    valid_fraction: float = 0.02
    limit: int | None = None  # first N lines only (tests, quick runs)


class LMTask:
    def __init__(self, data: LMDataConfig, asr_checkpoint: dict, dims_overrides: dict | None = None,
                 seed: int = 0, device: str = "cpu"):
        """`asr_checkpoint`: a loaded ASR checkpoint; its tokenizer and reserved ids are the LM's."""
        self.data, self.device = data, torch.device(device)
        self.tokenizer = SubwordTokenizer.from_dict(asr_checkpoint["tokenizer"])
        asr = asr_checkpoint["dims"]
        lines = [s.strip() for s in Path(data.text).read_text().splitlines() if s.strip()]
        lines = lines[: data.limit]
        encoded = [(line, self.tokenizer.encode(line)) for line in lines]
        encoded = [(line, ids) for line, ids in encoded if ids]
        # a line's hash, not its position, decides the split: adding text keeps old lines' side
        cut = int(data.valid_fraction * 2**32)
        self.valid = [torch.tensor(ids) for line, ids in encoded if int(hash_text(line)[:8], 16) < cut]
        self.train = [torch.tensor(ids) for line, ids in encoded if int(hash_text(line)[:8], 16) >= cut]
        if not self.train or not self.valid:
            raise ValueError(f"{data.text}: too few lines for a training and a validation split")
        dims = dict(vocab_size=asr["vocab_size"], sos=asr["sos"], eos=asr["eos"], pad=asr["blank"])
        self.model = RNNLM(LMDims(**{**dims, **(dims_overrides or {})}))
        self.sampler = BucketBatchSampler([len(t) + 1 for t in self.train], data.max_batch_tokens,
                                          seed=seed)
        self.rng = random.Random(seed)

    def _batch(self, sentences: list[torch.Tensor]):
        tokens, lengths = pad_sequences(sentences, self.model.dims.pad)
        return tokens.to(self.device), lengths.to(self.device)

    def batches(self, epoch: int):
        self.sampler.set_epoch(epoch)
        for batch in self.sampler:
            yield self._batch([self.train[i] for i in batch])

    def loss(self, batch, step: int):
        return self.model.loss(*batch)

    def evaluate(self) -> dict[str, float]:
        total, count = 0.0, 0.0
        for start in range(0, len(self.valid), 256):
            out = self.model.loss(*self._batch(self.valid[start: start + 256]))
            total += float(out["loss"]) * float(out["tokens"])
            count += float(out["tokens"])
        nll = total / count
        return {"loss": round(nll, 4), "perplexity": round(math.exp(nll), 2), "score": nll}

    def checkpoint(self) -> dict:
        return {
            "kind": "lm",
            "dims": self.model.dims.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "data": {"text": self.data.text, "train_sentences": len(self.train),
                     "valid_sentences": len(self.valid),
                     "train_tokens": sum(len(t) for t in self.train)},
        }

