"""Text front-ends: English normalisation, a character vocabulary, and phonemes.

`normalize_text` spells out what a speech model cannot read: numbers, ordinals, years,
currency, times, percentages and common abbreviations (num2words does the number words).
`CharVocab` maps normalised text to ids for ASR targets and character TTS; `PhoneVocab` and
`flite_phones` give the phone sequence flite's front-end produces (the one its `-psdur`
segmentation uses, so a duration model trained on it reads the same units at inference);
`libflite_phones` gives the same sequence from libflite in process, a hundred times faster;
`espeak_phonemes` is the optional IPA front-end through espeak-ng.
"""

from __future__ import annotations

import logging
import re
import subprocess
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from num2words import num2words

from pipeline.frontend.flite import IN_PROCESS_TEXT, flite_front_end

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 2_000


class TextError(ValueError):
    """Text a model cannot take; the message is meant for the user."""


class EmptyTextError(TextError):
    pass


class TextTooLongError(TextError):
    pass


def check_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(text, str):
        raise TextError(f"text must be a string, not {type(text).__name__}")
    text = text.strip()
    if not text:
        raise EmptyTextError("the text is empty")
    if len(text) > max_chars:
        raise TextTooLongError(f"the text has {len(text)} characters; the limit is {max_chars}")
    return text


# ------------------------------------------------------------------ normalisation

_ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "jr": "junior",
    "sr": "senior", "prof": "professor", "gen": "general", "capt": "captain", "lt": "lieutenant",
    "col": "colonel", "sgt": "sergeant", "vs": "versus", "etc": "et cetera", "approx": "approximately",
    "ft": "feet", "mt": "mount", "ave": "avenue", "dept": "department",
}
_ABBREV_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.", re.IGNORECASE)
_NUMBER_ABBREV_RE = re.compile(r"\bno\.\s?(?=\d)", re.IGNORECASE)  # "No. 5", not "said no."
_SAINT_RE = re.compile(r"\bSt\.(?=\s+[A-Z])")  # "St. Louis"; otherwise "Main St." is a street
_STREET_RE = re.compile(r"\bst\.", re.IGNORECASE)
_SCALED_CURRENCY_RE = re.compile(
    r"([$£€])\s?(\d+(?:\.\d+)?)\s?(thousand|million|billion|trillion)\b", re.IGNORECASE)
_CURRENCY_RE = re.compile(r"([$£€])\s?(\d[\d,]*)(?:\.(\d{1,2}))?\b")
_CURRENCY_NAMES = {"$": ("dollar", "cent"), "£": ("pound", "penny"), "€": ("euro", "cent")}
_TIME_RE = re.compile(r"\b(\d{1,2}):(\d{2})\s*([ap]\.?m\.?)?", re.IGNORECASE)
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_YEAR_RE = re.compile(r"\b(1[1-9]\d\d|20\d\d)\b")
_DECADE_RE = re.compile(r"\b(?:(1[1-9]|20)(\d)|(\d))0'?s\b")  # 1990s, 70s, 90's
_DIGIT_LETTER_RE = re.compile(r"(?<=\d)(?=[A-Za-z])|(?<=[A-Za-z])(?=\d)")  # 20inches, O2, CD4
_DECIMAL_RE = re.compile(r"\b\d+\.\d+\b")
_NUMBER_RE = re.compile(r"\b\d[\d,]*\b")


def _say(number: int | float, **kwargs) -> str:
    """num2words without its thousands commas, which a TTS model would read as pauses."""
    return num2words(number, **kwargs).replace(",", "")


def _say_amount(digits: str) -> str:
    """'50' -> 'fifty', '2.5' -> 'two point five'."""
    return _say(float(digits)) if "." in digits else _say(int(digits))


def _plural(word: str, n: int) -> str:
    if n == 1:
        return word
    return "pence" if word == "penny" else word + "s"


def _currency(m: re.Match) -> str:
    unit, sub = _CURRENCY_NAMES[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    cents = int((m.group(3) or "0").ljust(2, "0"))
    words = f"{_say(whole)} {_plural(unit, whole)}"
    if cents:
        words += f" {_say(cents)} {_plural(sub, cents)}"
    return words


def _scaled_currency(m: re.Match) -> str:
    """'$2.5 million' -> 'two point five million dollars'."""
    words = _say_amount(m.group(2))
    return f"{words} {m.group(3).lower()} {_plural(_CURRENCY_NAMES[m.group(1)][0], 2)}"


def _decade(m: re.Match) -> str:
    """'1990s' -> 'nineteen nineties', '70s' -> 'seventies', '1900s' -> 'nineteen hundreds'."""
    century, tens = (m.group(1), m.group(2)) if m.group(1) else (None, m.group(3))
    if tens == "0":
        return f"{_say(int(century))} hundreds" if century else "zeros"
    words = _say(int(tens) * 10)
    words = words[:-1] + "ies" if words.endswith("y") else words + "s"
    return f"{_say(int(century))} {words}" if century else words


def _time(m: re.Match) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    words = _say(hour)
    if minute == 0:
        words += " o'clock" if not m.group(3) else ""
    elif minute < 10:
        words += f" oh {_say(minute)}"
    else:
        words += f" {_say(minute)}"
    if m.group(3):
        words += " " + " ".join(m.group(3).lower().replace(".", ""))
    return words


# punctuation a speech model has no use for: pauses become commas, brackets and quotes go
_PUNCTUATION = str.maketrans({
    ";": ",", ":": ",", "\u2014": ", ", "\u2013": " ", "\u2018": "'", "\u2019": "'", "\u02bc": "'",
    "\u201c": " ", "\u201d": " ", '"': " ", "(": " ", ")": " ", "[": " ", "]": " ", "{": " ",
    "}": " ", "/": " ", "*": " ", "_": " ", "#": " ", "~": " ", "`": " ",
})
_KEPT = re.compile(r"[^a-z' .,?!\s-]")


def _strip_accents(text: str) -> str:
    """'café naïve' -> 'cafe naive': decompose, then drop the combining marks."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalize_text(text: str) -> str:
    """Written English -> spoken words, lower case, punctuation kept only as . , ? ! '

    Characters that are neither English letters nor usual punctuation (other scripts, emoji,
    symbols) are dropped with a warning.
    """
    text = _strip_accents(text)
    text = _NUMBER_ABBREV_RE.sub("number ", text)
    text = _STREET_RE.sub("street", _SAINT_RE.sub("saint", text))
    text = _ABBREV_RE.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], text)
    text = text.replace("&", " and ")
    text = _SCALED_CURRENCY_RE.sub(_scaled_currency, text)
    text = _CURRENCY_RE.sub(_currency, text)
    text = _TIME_RE.sub(_time, text)
    text = _PERCENT_RE.sub(lambda m: f"{_say_amount(m.group(1))} percent", text)
    text = _ORDINAL_RE.sub(lambda m: _say(int(m.group(1)), to="ordinal"), text)
    text = _DECADE_RE.sub(_decade, text)
    text = _DIGIT_LETTER_RE.sub(" ", text)  # after ordinals and decades: "20inches" -> "20 inches"
    text = _DECIMAL_RE.sub(lambda m: _say(float(m.group(0))), text)  # before years: 1999.5
    text = _YEAR_RE.sub(lambda m: _say(int(m.group(1)), to="year"), text)
    text = _NUMBER_RE.sub(lambda m: _say(int(m.group(0).replace(",", ""))), text)
    text = text.translate(_PUNCTUATION).lower()  # after the numbers: 3:30 keeps its colon
    unknown = set(_KEPT.findall(text))
    if unknown:
        log.warning("dropped characters English text normalisation does not read: %s",
                    " ".join(sorted(unknown)))
        text = _KEPT.sub(" ", text)
    text = text.replace("-", " ")
    return re.sub(r"\s+", " ", text).strip()


def words_for_scoring(text: str) -> str:
    """Normalised words without punctuation or quotes: what WER is computed on."""
    words = (w.strip("'") for w in re.findall(r"[a-z']+", normalize_text(text)))
    return " ".join(w for w in words if w)


# ------------------------------------------------------------------ vocabularies


@dataclass(frozen=True)
class CharVocab:
    """Characters of normalised text; ids 0-2 are pad, sos and eos (sos doubles as CTC blank)."""

    chars: str = " abcdefghijklmnopqrstuvwxyz'.,?!"

    PAD = 0
    SOS = 1
    EOS = 2
    BLANK = 1

    def __len__(self) -> int:
        return 3 + len(self.chars)

    def encode(self, text: str) -> list[int]:
        ids, dropped = [], set()
        index = {c: i + 3 for i, c in enumerate(self.chars)}
        for c in text:
            if c in index:
                ids.append(index[c])
            else:
                dropped.add(c)
        if dropped:
            log.warning("dropped characters the vocabulary lacks: %s", "".join(sorted(dropped)))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i - 3] for i in ids if i >= 3)

    def to_dict(self) -> dict:
        return {"kind": "chars", "chars": self.chars}


# flite's US English phone set (cmulex), as `flite -psdur` prints it, plus pause
FLITE_PHONES = (
    "pau aa ae ah ao aw ax axr ay b ch d dh eh el em en er ey f g hh ih ix iy jh k l m n ng "
    "nx ow oy p r s sh t th uh uw v w y z zh"
).split()


@dataclass(frozen=True)
class PhoneVocab:
    phones: tuple[str, ...] = tuple(FLITE_PHONES)

    PAD = 0

    def __len__(self) -> int:
        return 1 + len(self.phones)

    def encode(self, phones: Sequence[str]) -> list[int]:
        index = {p: i + 1 for i, p in enumerate(self.phones)}
        unknown = [p for p in phones if p not in index]
        if unknown:
            log.warning("dropped unknown phones: %s", " ".join(sorted(set(unknown))))
        return [index[p] for p in phones if p in index]

    def to_dict(self) -> dict:
        return {"kind": "phones", "phones": list(self.phones)}


def flite_phones(text: str, timeout: float = 30.0) -> list[str]:
    """The phones flite's front-end reads `text` as (the sequence `flite -psdur` segments)."""
    try:
        proc = subprocess.run(
            ["flite", "-voice", "slt", "-psdur", "-t", text, "-o", "none"],
            capture_output=True, text=True, timeout=timeout,
        )
    except FileNotFoundError:
        raise TextError("flite is not installed (apt-get install flite)") from None
    if proc.returncode != 0:
        raise TextError(f"flite could not read the text: {proc.stderr.strip()}")
    return [item.rpartition(":")[0] for item in proc.stdout.split() if ":" in item]


def libflite_phones(text: str) -> list[str]:
    """`flite_phones(text)`, read by libflite in this process (~0.3 ms, not a ~35 ms process).

    Normalised text only (what `normalize_text` returns); other text, and every text where
    libflite cannot be loaded, goes to the `flite` command.
    """
    front_end = flite_front_end()
    if front_end is None or not IN_PROCESS_TEXT.fullmatch(text):
        return flite_phones(text)
    try:
        return front_end.phones(text)
    except RuntimeError as e:
        raise TextError(str(e)) from None


def espeak_phonemes(text: str, voice: str = "en-us") -> str:
    """IPA phonemes from espeak-ng, words separated by spaces."""
    try:
        proc = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", voice, text],
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise TextError("espeak-ng is not installed (apt-get install espeak-ng)") from None
    return " ".join(proc.stdout.split())


def split_sentences(text: str, max_chars: int = 200) -> list[str]:
    """Split long text at sentence ends (then commas) into chunks of at most `max_chars`."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?;])\s+", text) if s.strip()]
    out = []
    for s in sentences:
        while len(s) > max_chars:
            cut = s.rfind(",", 0, max_chars)
            cut = cut if cut > 0 else s.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(s[: cut + 1].strip())
            s = s[cut + 1:].strip()
        if s:
            out.append(s)
    return out
