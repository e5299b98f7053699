"""libflite in process gives exactly the phones of the `flite` command (the units the shipped TTS
models were trained on), and the phone front-end uses it."""

from __future__ import annotations

import shutil

import pytest

import pipeline.frontend.text
from pipeline.frontend.flite import FliteFrontEnd, flite_front_end
from pipeline.frontend.text import TextError, flite_phones, libflite_phones, normalize_text
from pipeline.frontend.units import PhoneFrontend

needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None or flite_front_end() is None,
    reason="needs both the flite command and libflite")

TRICKY = [
    "The birch canoe slid on the smooth planks.",
    "Hmm.",
    "A.",
    "Yes.",
    "Buffalo buffalo Buffalo buffalo buffalo buffalo Buffalo buffalo.",
    "The sixth sick sheik's sixth sheep's sick.",
    "Call 555 0123, then 555 0199, then 555 0142, and finally 555 0187.",
    "The codes are 7, 14, 21, 28, 35, 42, 49, 56, 63 and 70.",
    "Supercalifragilisticexpialidocious is a very long word indeed.",
    "In the early morning light, the old fisherman carefully prepared his small wooden boat, "
    "checked every knot of the tangled nets twice, whispered a quiet prayer for calm weather and "
    "a generous catch, and finally pushed off from the rocky shore toward the distant grey "
    "horizon.",
    # sentence ends inside one text: flite -t reads it all as one utterance (one pause, not two)
    "What? No! Yes. Maybe, then.",
    "Yahoo! it works",
    "Rock 'n' roll at 9:05 a.m., 'tis o'clock.",
    "Dr. Smith paid $5.50 for 3 CDs in the 1990s.",
    "e.g. the U.S.A. vs. the UK",
    "...",
    "?!",
    "'",
    "",
    "x" * 300,
]


@needs_flite
@pytest.mark.parametrize("text", TRICKY)
def test_in_process_phones_equal_the_flite_command(text):
    normalized = normalize_text(text)
    assert libflite_phones(normalized) == flite_phones(normalized)


@needs_flite
def test_in_process_phones_of_a_known_sentence():
    # flite -voice slt -psdur -t "the birch canoe slid on the smooth planks." (flite 2.2)
    expected = "pau dh ax b er ch k ax n uw s l ih d aa n dh ax s m uw dh p l ae ng k s pau".split()
    assert flite_front_end().phones("the birch canoe slid on the smooth planks.") == expected


@needs_flite
def test_text_outside_normalised_text_goes_to_the_command():
    text = "Hello, World: 42 & more"
    with pytest.raises(ValueError):
        flite_front_end().phones(text)
    assert libflite_phones(text) == flite_phones(text)


@needs_flite
def test_phone_frontend_reads_in_process(monkeypatch):
    def no_command(text, timeout=30.0):
        raise AssertionError("the flite command ran")

    text = "The birch canoe slid on the smooth planks."
    expected = PhoneFrontend().vocab.encode(flite_phones(normalize_text(text)))
    monkeypatch.setattr(pipeline.frontend.text, "flite_phones", no_command)
    assert PhoneFrontend().encode(text) == expected


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")
def test_without_libflite_the_command_reads(monkeypatch):
    monkeypatch.setattr(pipeline.frontend.text, "flite_front_end", lambda: None)
    assert libflite_phones("the birch canoe") == flite_phones("the birch canoe")


@needs_flite
@pytest.mark.parametrize("text", ["", "...", "?!", "\U0001F600"])
def test_nothing_speakable_is_a_text_error(text):
    with pytest.raises(TextError, match="nothing to say"):
        PhoneFrontend().encode(text)


@needs_flite
def test_one_voice_per_process():
    assert flite_front_end() is flite_front_end()
    assert isinstance(flite_front_end(), FliteFrontEnd)
