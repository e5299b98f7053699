"""The synthesiser's voices and its sentence-by-sentence path, on tiny random checkpoints."""

import pytest
import torch

from pipeline.inference.synthesizer import Synthesizer
from tests.helpers import make_tiny_tts_checkpoint

TEXTS = ["The first one. And a second, longer sentence follows it here. Third.", "Only one."]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = make_tiny_tts_checkpoint(tmp_path_factory.mktemp("tts") / "multi.pt",
                                    speakers=["flite-slt", "flite-awb"])
    ckpt = torch.load(path, weights_only=False)
    torch.manual_seed(1)
    ckpt["state_dict"]["speaker.weight"] = torch.randn(2, 32)  # voices that differ
    torch.save(ckpt, path)
    return Synthesizer.load(path)


def test_sentences_handed_over_as_made_add_up_to_the_whole(synth):
    whole = synth.synthesize_batch(TEXTS, voice="awb")
    heard: dict[int, list] = {0: [], 1: []}
    rounds = []
    streamed = synth.synthesize_batch(TEXTS, voice="awb", on_sentence=lambda i, j, n, wav: (
        heard[i].append(wav), rounds.append((i, j, n))))
    assert rounds == [(0, 0, 3), (1, 0, 1), (0, 1, 3), (0, 2, 3)]  # the k-th sentences together
    for i, result in enumerate(whole):
        assert torch.equal(torch.cat(heard[i]), streamed[i].wav)
        # batched otherwise, the mels differ in the last digits (padding), which Griffin-Lim
        # magnifies: the same lengths, not the same samples
        assert streamed[i].wav.shape == result.wav.shape


def test_voices_are_named_and_differ(synth):
    assert synth.voices == ["slt", "awb"]
    slt, awb = synth.mels(["Hello world."], voice="slt")[0], synth.mels(["Hello world."], voice="awb")[0]
    assert slt.shape == awb.shape and (slt - awb).abs().max() > 1e-3
    assert torch.equal(synth.mels(["Hello world."])[0], slt)  # the first voice by default
    with pytest.raises(ValueError, match="voice must be one of slt, awb"):
        synth.synthesize("Hello.", voice="rms")


def test_the_shipped_nat_model_speaks_the_declared_voices():
    """TTSOptions' voice choices (torch-free, for flags and schemas) are the shipped model's."""
    from pipeline.checkpoints import default_checkpoint, load_checkpoint
    from pipeline.inference.options import TTS_VOICES
    from pipeline.inference.synthesizer import checkpoint_voices, voice_records

    ckpt = load_checkpoint(default_checkpoint("tts-nat"), kinds=("tts-nat",))
    assert checkpoint_voices(ckpt) == list(TTS_VOICES)
    assert all(r["pocketsphinx_wer"] is not None for r in voice_records(ckpt))
