"""flite's text front-end in process: the phones `flite -voice slt -psdur -t TEXT` prints.

`flite -t TEXT` reads the whole text as one utterance (`flite_synth_text`), runs the front-end
(tokens, words, phrasing, lexicon, pauses, post-lexical rules), then clustergen waveform synthesis,
which sets each segment's end time but never adds, drops or renames one; `-psdur` prints the
Segment relation afterwards. Here the same slt voice, loaded from libflite through ctypes, runs
the same utterance with its waveform step taken out, and the Segment relation is read directly:
the same phones in ~0.3 ms instead of a ~35 ms process, most of it spent synthesising audio.

flite reports some errors by exiting the process, so only text in the alphabet of
`normalize_text`'s output is taken in process; `pipeline.frontend.text.libflite_phones` sends anything
else (and everything, where libflite cannot be loaded) to the `flite` command.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import threading

log = logging.getLogger(__name__)

# what normalize_text can return: the text this route is tested on and trusted with
IN_PROCESS_TEXT = re.compile(r"[a-z' .,?!]*")

_LIBRARIES = ("libflite.so.1", "libflite.so")
_SLT_LIBRARIES = ("libflite_cmu_us_slt.so.1", "libflite_cmu_us_slt.so")


class _Voice(ctypes.Structure):
    """The head of flite's `cst_voice` (include/cst_voice.h)."""

    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p),
                ("ffunctions", ctypes.c_void_p), ("utt_init", ctypes.c_void_p)]


def _load(names: tuple[str, ...]) -> ctypes.CDLL:
    for name in names[:-1]:
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    return ctypes.CDLL(names[-1])


def _declare(lib: ctypes.CDLL) -> None:
    ptr, text = ctypes.c_void_p, ctypes.c_char_p
    signatures = {
        "flite_init": (ctypes.c_int, []),
        "feat_remove": (ctypes.c_int, [ptr, text]),
        "flite_synth_text": (ptr, [text, ptr]),
        "utt_relation_present": (ctypes.c_int, [ptr, text]),
        "utt_relation": (ptr, [ptr, text]),
        "relation_head": (ptr, [ptr]),
        "item_next": (ptr, [ptr]),
        "item_feat_string": (text, [ptr, text]),
        "delete_utterance": (None, [ptr]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


class FliteFrontEnd:
    """flite's slt voice without its waveform synthesis; one utterance at a time (flite keeps
    no per-call state we can trust across threads, so calls are serialised)."""

    def __init__(self):
        self._lib = _load(_LIBRARIES)
        _declare(self._lib)
        slt = _load(_SLT_LIBRARIES)
        slt.register_cmu_us_slt.restype = ctypes.c_void_p
        slt.register_cmu_us_slt.argtypes = [ctypes.c_char_p]
        self._lib.flite_init()
        self._voice = slt.register_cmu_us_slt(None)
        if not self._voice:
            raise OSError("libflite could not register the slt voice")
        # without a wave_synth_func, utt_synth skips that step (it has no default)
        self._lib.feat_remove(_Voice.from_address(self._voice).features, b"wave_synth_func")
        self._lock = threading.Lock()

    def phones(self, text: str) -> list[str]:
        """The phone names of `text` read as one utterance, pauses included."""
        if not IN_PROCESS_TEXT.fullmatch(text):
            raise ValueError("only normalised text (a-z ' . , ? ! and spaces) is read in process")
        lib = self._lib
        with self._lock:
            utt = lib.flite_synth_text(os.fsencode(text), self._voice)
            if not utt:
                raise RuntimeError(f"flite could not read {text!r}")
            try:
                if not lib.utt_relation_present(utt, b"Segment"):
                    return []
                names, item = [], lib.relation_head(lib.utt_relation(utt, b"Segment"))
                while item:
                    names.append(lib.item_feat_string(item, b"name").decode())
                    item = lib.item_next(item)
                return names
            finally:
                lib.delete_utterance(utt)


@functools.cache
def flite_front_end() -> FliteFrontEnd | None:
    """The process's in-process front-end, or None (logged once) where libflite is missing."""
    try:
        return FliteFrontEnd()
    except (OSError, AttributeError) as e:
        log.warning("libflite not loadable (%s); phones come from one flite process a sentence", e)
        return None
