"""TTS text front-ends: text (or a manifest utterance) -> token ids of a model's vocabulary.

A checkpoint stores its vocabulary (`vocab.to_dict()`, which names its kind); `frontend_from_dict`
rebuilds the matching front-end, so a model is always fed the units it was trained on.

    phones  flite's phones, the units its `-psdur` segmentation uses, read by libflite in
            process (`libflite_phones`, the same phones as the `flite` command); a manifest
            utterance that carries that segmentation is read from it directly
    chars   characters of the normalised text
"""

from __future__ import annotations

from pipeline.data.manifests import Utterance
from pipeline.frontend.text import CharVocab, PhoneVocab, TextError, libflite_phones, normalize_text


class PhoneFrontend:
    units = "phones"

    def __init__(self, vocab: PhoneVocab | None = None):
        self.vocab = vocab or PhoneVocab()

    def encode(self, text: str) -> list[int]:
        ids = self.vocab.encode(libflite_phones(normalize_text(text)))
        if len(ids) <= 2:  # only the pauses at either end: nothing speakable survived
            raise TextError(f"nothing to say in {text!r}")
        return ids

    def encode_utterance(self, u: Utterance) -> list[int]:
        return self.vocab.encode([p for p, _ in u.phones]) if u.phones else self.encode(u.text)


class CharFrontend:
    units = "chars"

    def __init__(self, vocab: CharVocab | None = None):
        self.vocab = vocab or CharVocab()

    def encode(self, text: str) -> list[int]:
        ids = self.vocab.encode(normalize_text(text))
        if not any(c.isalpha() for c in self.vocab.decode(ids)):
            raise TextError(f"nothing to say in {text!r}")
        return ids

    def encode_utterance(self, u: Utterance) -> list[int]:
        return self.encode(u.text)


Frontend = PhoneFrontend | CharFrontend


def frontend_for(units: str) -> Frontend:
    """The default front-end of `units`: "phones" or "chars"."""
    if units == "phones":
        return PhoneFrontend()
    if units == "chars":
        return CharFrontend()
    raise ValueError(f"unknown text units {units!r}; choose 'phones' or 'chars'")


def frontend_from_dict(vocab: dict) -> Frontend:
    """The front-end of a checkpoint's stored vocabulary."""
    if vocab.get("kind") == "phones":
        return PhoneFrontend(PhoneVocab(tuple(vocab["phones"])))
    if vocab.get("kind") == "chars":
        return CharFrontend(CharVocab(vocab["chars"]))
    raise ValueError(f"unknown vocabulary kind {vocab.get('kind')!r}")
