"""The recogniser's word list: the words of the training text and of a pronouncing dictionary.

    speechq lexicon --text data/text/train.txt --out checkpoints/lexicon.txt

The dictionary is CMUdict as the pocketsphinx package carries it (its English model's
`cmudict-en-us.dict`), so nothing is fetched. `Recognizer.load` reads the shipped
`checkpoints/lexicon.txt` and fuses it into beam search as a soft constraint (models.lexicon).
The file is one normalised word a line, sorted, with how often the training text has it
("cat 12"; 0 for a word only the dictionary has), after "# " lines that say how it was made: it
diffs and greps like any word list. The words of count 0 are the lexicon's rare words, which
cost the recogniser more (`rare_word_weight`); a line without a count is a plain word, so any
word list, one word a line, is a lexicon too.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from models.lexicon import Lexicon
from pipeline.frontend.text import words_for_scoring

_VARIANT = re.compile(r"\(\d+\)$")  # CMUdict's second and later pronunciations: "read(2)"


class LexiconError(ValueError):
    pass


def cmudict_path() -> Path:
    """CMUdict inside the installed pocketsphinx package."""
    try:
        import pocketsphinx
    except ImportError:
        raise LexiconError("pocketsphinx is not installed: pass --dictionary or --no-cmudict") \
            from None
    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    if not path.is_file():
        raise LexiconError(f"{path}: pocketsphinx carries no CMUdict here")
    return path


def describe_source(path: Path) -> str:
    """A dictionary's path, or for pocketsphinx's CMUdict its name and package version."""
    try:
        if path.resolve() == cmudict_path().resolve():
            from importlib.metadata import version

            return f"CMUdict from pocketsphinx {version('pocketsphinx')} (en-us/{path.name})"
    except LexiconError:
        pass
    return str(path)


def dictionary_words(path: Path) -> set[str]:
    """Headwords of a pronouncing dictionary ("word PH ON ES" a line), normalised as ASR text."""
    words: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            head = line.split(maxsplit=1)[0] if line.strip() else ""
            words.update(words_for_scoring(_VARIANT.sub("", head)).split())
    return words


def text_words(lines: Iterable[str]) -> Counter[str]:
    """Each word of the text, normalised as ASR text, and how often it occurs."""
    return Counter(w for line in lines for w in words_for_scoring(line).split())


def build_lexicon(text_lines: Iterable[str], dictionaries: Iterable[Path] = ()) -> dict[str, int]:
    """Every word of the text and of the dictionaries, with its count in the text (0: only a
    dictionary has it)."""
    counts = dict(text_words(text_lines))
    for path in dictionaries:
        for word in dictionary_words(path):
            counts.setdefault(word, 0)
    return counts


def write_lexicon(path: Path, words: Mapping[str, int] | Iterable[str],
                  provenance: dict | None = None) -> int:
    """Write the sorted words, each with its count where `words` maps words to counts, after
    one "# key: value" line per `provenance` entry."""
    lines = ([f"{w} {words[w]}" for w in sorted(words)] if isinstance(words, Mapping)
             else sorted(set(words)))
    header = "".join(f"# {k}: {v}\n" for k, v in (provenance or {}).items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "".join(f"{line}\n" for line in lines))
    return len(lines)


def read_lexicon(path: Path) -> Lexicon:
    """The word list at `path`, its words of count 0 rare; read once per file version, since a
    Lexicon is immutable and every Recognizer loads the shipped one."""
    if not path.is_file():
        raise LexiconError(f"{path}: no such lexicon")
    return _read_lexicon(path.resolve(), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_lexicon(path: Path, mtime_ns: int) -> Lexicon:
    words, rare = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields or line.startswith("#"):
            continue
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()):
            raise LexiconError(f"{path}:{n}: expected a word and an optional count, not {line!r}")
        words.append(fields[0])
        if fields[1:] == ["0"]:
            rare.append(fields[0])
    if not words:
        raise LexiconError(f"{path}: an empty lexicon")
    return Lexicon(words, rare)
