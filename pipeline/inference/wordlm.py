"""Word n-gram language models for the recogniser (models.wordlm), read from ARPA or Sphinx
binary files.

The default is the general-English trigram model that the pocketsphinx package carries with
its English acoustic model (`en-us.lm.bin`), so nothing is fetched: the recogniser's own
language model knows the training text's forty thousand sentences, this one the word context
of everyday English ("the wind blew", "fairy tales"). Any ARPA file works too (KenLM's
`lmplz` writes them); the file is read by pocketsphinx's n-gram reader, which handles
back-off, and queried a word at a time.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

# Sphinx scores are integers in log base 1.0001; an unknown word comes back as "log 0"
_LOG_BASE = math.log(1.0001)
_LOG_ZERO = -(2 ** 28)


class WordLMError(ValueError):
    pass


def pocketsphinx_lm_path() -> Path:
    """The English trigram model inside the installed pocketsphinx package."""
    try:
        import pocketsphinx
    except ImportError:
        raise WordLMError("pocketsphinx is not installed: pass a word LM file") from None
    path = Path(pocketsphinx.get_model_path()) / "en-us" / "en-us.lm.bin"
    if not path.is_file():
        raise WordLMError(f"{path}: pocketsphinx carries no English language model here")
    return path


class NGramWordLM:
    """An n-gram model file as a `models.wordlm.WordLM`.

    Args:
        unknown_char_logprob: a word the model does not have (its vocabulary is tens of
            thousands of words; the recogniser's lexicon has more) costs this per letter: a
            flat cost would let the search glue words into one unknown word that pays once.
    """

    def __init__(self, path: str | os.PathLike, unknown_char_logprob: float = -2.0):
        import pocketsphinx

        path = Path(path)
        if not path.is_file():
            raise WordLMError(f"{path}: no such word language model")
        try:
            self._model = pocketsphinx.NGramModel.readfile(str(path))
        except Exception as exc:  # the reader raises bare RuntimeError/ValueError on bad files
            raise WordLMError(f"{path}: not an ARPA or Sphinx binary n-gram model ({exc})") from None
        self.path = path
        self.order = int(self._model.size())
        self.unknown_char_logprob = unknown_char_logprob

    def logprob(self, word: str, history: tuple[str, ...]) -> float:
        score = self._model.prob([word, *reversed(history)])  # most recent word first
        return self.unknown_char_logprob * len(word) if score <= _LOG_ZERO else score * _LOG_BASE


@functools.lru_cache(maxsize=4)
def load_word_lm(path: Path) -> NGramWordLM:
    """One model per file, shared by every Recognizer in the process (the default is 27 MB)."""
    return NGramWordLM(path)
