"""`should_stop`: the recogniser and the synthesiser ask it between steps and stop when it says
so; a hook that never says so changes nothing."""

import pytest
import torch

from models.decoding import Stopped
from pipeline.inference.recognizer import Recognizer
from pipeline.inference.synthesizer import Synthesizer
from tests.helpers import make_tiny_asr_checkpoint, make_tiny_tts_checkpoint


class Counter:
    """A should_stop that says stop at its `stop_at`-th call (never with None)."""

    def __init__(self, stop_at: int | None = None):
        self.calls, self.stop_at = 0, stop_at

    def __call__(self) -> bool:
        self.calls += 1
        return self.stop_at is not None and self.calls >= self.stop_at


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    path = make_tiny_asr_checkpoint(tmp_path_factory.mktemp("asr") / "asr.pt")
    return Recognizer.load(path, lm=False, lexicon=False, word_lm=False)


@pytest.mark.parametrize("decoder", ["attention", "ctc"])
def test_the_recognizer_asks_between_steps_and_stops(recognizer, decoder):
    wav = 0.1 * torch.randn(16_000 * 2, generator=torch.Generator().manual_seed(0))
    plain = recognizer.transcribe(wav, beam_size=2, decoder=decoder)
    never = Counter()
    assert recognizer.transcribe(wav, beam_size=2, decoder=decoder, should_stop=never) == plain
    assert never.calls >= (3 if decoder == "attention" else 1)  # every search step, or per batch
    stop = Counter(stop_at=never.calls)  # the last time it is asked
    with pytest.raises(Stopped):
        recognizer.transcribe(wav, beam_size=2, decoder=decoder, should_stop=stop)
    assert stop.calls == never.calls


def test_an_exception_the_hook_raises_ends_the_call(recognizer):
    class Mine(Exception):
        pass

    def should_stop():
        raise Mine

    with pytest.raises(Mine):
        recognizer.transcribe(torch.zeros(16_000), beam_size=2, should_stop=should_stop)


def test_the_synthesizer_asks_between_sentences_and_steps(tmp_path):
    synth = Synthesizer.load(make_tiny_tts_checkpoint(tmp_path / "tts.pt"))
    text = "One sentence here. Another one there. And a third."
    plain = synth.synthesize(text)
    never = Counter()
    assert torch.equal(synth.synthesize(text, should_stop=never).wav, plain.wav)
    assert never.calls == 1 + len(plain.sentences)  # before the batch, before each vocoding
    with pytest.raises(Stopped):
        synth.synthesize(text, should_stop=Counter(stop_at=3))
    ar = Synthesizer.load(decoder="ar")  # the shipped autoregressive model: one ask per step
    never = Counter()
    ar.generate_mels(["Hi."], should_stop=never)
    assert never.calls > 3
    with pytest.raises(Stopped):
        ar.generate_mels(["Hi."], should_stop=Counter(stop_at=3))
