"""Subword tokens for ASR: a sentencepiece unigram model over normalised training text.

The serialized model travels inside the ASR checkpoint, so recognition needs no other file.
Ids 0 (blank/padding) and 1 (SOS/EOS) are reserved by models.asr; piece i has id i + 2.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import sentencepiece as spm

from pipeline.frontend.text import words_for_scoring

RESERVED = 2  # blank/pad and sos/eos


class SubwordTokenizer:
    def __init__(self, model_proto: bytes):
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)

    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int = 256) -> "SubwordTokenizer":
        """Unigram model over the normalised words of `sentences`; vocab_size counts pieces, an
        upper bound where the text has fewer (a small corpus gets the pieces it has)."""
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=(words_for_scoring(s) for s in sentences),
            model_writer=buffer,
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            model_type="unigram",
            character_coverage=1.0,
            bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
            num_threads=2,
            minloglevel=2,
        )
        return cls(buffer.getvalue())

    def __len__(self) -> int:
        return self.sp.get_piece_size() + RESERVED

    def encode(self, text: str) -> list[int]:
        return [i + RESERVED for i in self.sp.encode(words_for_scoring(text))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([i - RESERVED for i in ids if i >= RESERVED])

    def piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id - RESERVED)

    def pieces(self) -> list[str | None]:
        """Each id's text (None for the reserved ids and the unknown piece), for models.lexicon."""
        return [None] * RESERVED + [None if self.sp.is_unknown(i) or self.sp.is_control(i)
                                    else self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    def starts_word(self, token_id: int) -> bool:
        return token_id >= RESERVED and self.piece(token_id).startswith("\u2581")

    def to_dict(self) -> dict:
        return {"kind": "sentencepiece", "model": self.model_proto}

    @staticmethod
    def from_dict(d: dict) -> "SubwordTokenizer":
        return SubwordTokenizer(d["model"])
