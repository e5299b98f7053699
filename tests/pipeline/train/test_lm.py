"""The language-model recipe and its fusion in the Recognizer."""

import json
import math

import pytest
import torch

from pipeline.checkpoints import CheckpointError
from pipeline.inference.recognizer import Recognizer
from pipeline.train.lm import LMDataConfig, LMTask
from pipeline.train.loop import TrainConfig, Trainer
from tests.helpers import REPO, make_tiny_asr_checkpoint

HARVARD = REPO / "pipeline" / "resources" / "harvard-sentences.txt"


@pytest.fixture(scope="module")
def asr_path(tmp_path_factory):
    return make_tiny_asr_checkpoint(tmp_path_factory.mktemp("asr") / "asr.pt")


@pytest.fixture(scope="module")
def lm_run(asr_path, tmp_path_factory):
    """A tiny LM trained briefly on 100 lines (the tiny recogniser's units come from them)."""
    root = tmp_path_factory.mktemp("lm")
    text = root / "text.txt"
    text.write_text("\n".join(HARVARD.read_text().splitlines()[:100]) + "\n")
    asr = torch.load(asr_path, weights_only=False)
    task = LMTask(LMDataConfig(text=str(text), max_batch_tokens=2000, valid_fraction=0.1), asr,
                  dims_overrides=dict(d_model=64, n_layers=1, dropout=0.0))
    config = TrainConfig(max_steps=120, peak_lr=1e-2, warmup_steps=10, log_every=10, eval_every=40,
                         save_every=120, threads=1)
    Trainer(task, config, root / "run").fit(resume=False)
    return root / "run"


@pytest.mark.slow
def test_training_learns_the_text(lm_run):
    records = [json.loads(line) for line in (lm_run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r and "eval" not in r]
    best = torch.load(lm_run / "best.pt", weights_only=False)
    uniform = math.log(best["dims"]["vocab_size"])  # the loss of a uniform guess
    assert losses[0] > losses[-1] and losses[-1] < 0.5 * uniform  # it fits its 90 training lines
    assert best["kind"] == "lm" and best["data"]["valid_sentences"] > 0
    # and generalises some: held-out lines are far likelier than under a uniform guess
    assert best["metrics"]["perplexity"] < best["dims"]["vocab_size"] / 2


@pytest.mark.slow
def test_recognizer_fuses_an_lm_with_its_units(asr_path, lm_run, tmp_path):
    wav = torch.randn(16_000) * 0.1
    plain = Recognizer.load(asr_path)  # a model of its own units: the shipped LM does not apply
    assert plain.lm is None and plain.checkpoint_info["lm"] is None
    fused = Recognizer.load(asr_path, lm=lm_run / "best.pt")
    assert fused.lm is not None and fused.checkpoint_info["lm"].endswith("best.pt")
    # weight 0 leaves the search as it was
    assert fused.transcribe(wav, lm_weight=0.0).text == plain.transcribe(wav).text
    assert isinstance(fused.transcribe(wav, lm_weight=0.5).text, str)


def test_recognizer_refuses_an_lm_of_other_units(asr_path, tmp_path):
    other = torch.load(asr_path, weights_only=False)
    other["tokenizer"] = {"kind": "sentencepiece", "model": b"not the same units"}
    lm = {"kind": "lm", "dims": {"vocab_size": 8, "d_model": 4, "n_layers": 1},
          "state_dict": {}, "tokenizer": other["tokenizer"]}
    torch.save(lm, tmp_path / "lm.pt")
    with pytest.raises(CheckpointError, match="units"):
        Recognizer.load(asr_path, lm=tmp_path / "lm.pt")
