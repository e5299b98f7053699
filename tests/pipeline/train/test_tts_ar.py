"""The autoregressive TTS recipe end to end on a few corpus-like utterances: training with
validation plots, the checkpoint in the Synthesizer, and a NAT model trained from its attention."""

import json

import numpy as np
import pytest
import torch

from models.fastspeech import FastSpeechDims
from models.tts import SynthesisOptions, TransformerTTS, TTSDims
from pipeline.checkpoints import CheckpointError
from pipeline.frontend.audio import save_wav
from pipeline.frontend.text import PhoneVocab
from pipeline.inference.synthesizer import Synthesizer
from pipeline.train.loop import TrainConfig, Trainer
from pipeline.train.tts_ar import ARTrainOptions, TransformerTTSTask, default_dims, warm_start
from pipeline.train.tts_data import TTSDataConfig
from pipeline.train.tts_nat import FastSpeechTask

pytestmark = pytest.mark.slow  # trains two tiny models

PHONES = ["pau", "hh", "ax", "l", "ow", "w", "er", "d"]
SAMPLE_RATE = 16_000


def _write_corpus(root, n=8, seed=0):
    """Each phone a tone of its own pitch for a random length; flite-style segmentation."""
    rng = np.random.default_rng(seed)
    (root / "wavs").mkdir()
    with (root / "manifest.jsonl").open("w") as f:
        for i in range(n):
            phones = ["pau", *rng.choice(PHONES[1:], size=int(rng.integers(4, 8))), "pau"]
            seconds = rng.uniform(0.05, 0.12, size=len(phones))
            parts = [0.3 * np.sin(2 * np.pi * (150 + 60 * PHONES.index(p))
                                  * np.arange(int(s * SAMPLE_RATE)) / SAMPLE_RATE)
                     for p, s in zip(phones, seconds)]
            path = root / "wavs" / f"u{i}.wav"
            save_wav(path, torch.tensor(np.concatenate(parts), dtype=torch.float32), SAMPLE_RATE)
            ends = np.cumsum(seconds)
            segmentation = [[p, round(float(e), 4)] for p, e in zip(phones, ends)]
            f.write(json.dumps({"id": f"slt-{i:02d}", "audio": f"wavs/u{i}.wav",
                                "text": "hello world", "duration": float(ends[-1]),
                                "speaker": "slt", "phones": segmentation}) + "\n")
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("corpus")
    data = TTSDataConfig(manifest=str(_write_corpus(root)), speaker="slt", valid_size=2,
                         max_batch_frames=400)
    dims = default_dims("phones", d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1,
                        n_decoder_layers=1, decoder_prenet_dim=32, postnet_channels=16,
                        postnet_layers=2, cross_attention="location")
    task = TransformerTTSTask(data, dims, ARTrainOptions(scheduled_sampling=0.5, sampling_start=2,
                                                         sampling_ramp=2, eval_generate=2),
                              plot_dir=root / "run" / "attention")
    config = TrainConfig(max_steps=4, warmup_steps=1, eval_every=2, save_every=4, log_every=1)
    metrics = Trainer(task, config, root / "run").fit()
    return root, data, metrics


def test_training_logs_validation_and_plots(trained):
    root, _, metrics = trained
    expected = {"loss", "mel", "stop", "guided", "cap_rate", "focus_rate", "length_ratio", "score"}
    assert expected <= set(metrics)
    assert 0 <= metrics["boundary_error_ms"] < 1000  # durations from attention vs the segmentation
    log = [json.loads(line) for line in (root / "run" / "train_log.jsonl").read_text().splitlines()]
    assert any("sampling_p" in r for r in log)  # scheduled sampling switched on after step 2
    plots = sorted(p.name for p in (root / "run" / "attention").glob("*.png"))
    assert "step-0000002-teacher.png" in plots and "step-0000004-free.png" in plots
    assert (root / "run" / "attention" / plots[0]).read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_synthesizes_with_the_ar_decoder(trained):
    root, _, _ = trained
    options = SynthesisOptions(max_len_ratio=3.0)
    synth = Synthesizer.load(root / "run" / "best.pt", decoder="ar", options=options)
    assert synth.checkpoint_info["kind"] == "tts-ar"
    results = synth.synthesize_batch(["Hello world.", "Hello. World!"])
    assert [r.sentences for r in results] == [["Hello world."], ["Hello.", "World!"]]
    for r in results:
        assert r.wav.numel() > 0 and torch.isfinite(r.wav).all()
        assert isinstance(r.hit_length_cap, bool) and 0 < r.focus_rate <= 1
    with pytest.raises(CheckpointError):
        Synthesizer.load(root / "run" / "best.pt", decoder="nat")
    with pytest.raises(ValueError, match="speed"):
        synth.synthesize("Hello world.", speed=1.5)


def test_nat_model_trains_from_the_teachers_attention(trained, tmp_path):
    root, data, _ = trained
    dims = FastSpeechDims(vocab_size=len(PhoneVocab()), d_model=32, n_heads=2, d_ff=64,
                          n_encoder_layers=1, n_decoder_layers=1, duration_channels=16,
                          postnet_channels=16)
    task = FastSpeechTask(data, dims, teacher=str(root / "run" / "best.pt"))
    for tokens, durations, mel in task.examples.values():
        assert durations.numel() == tokens.numel() and (durations >= 1).all()
        assert int(durations.sum()) == mel.size(0)
    assert task.duration_source["durations"] == "teacher-attention"
    assert task.duration_source["teacher_boundary_error_ms"] is not None
    Trainer(task, TrainConfig(max_steps=2, warmup_steps=1, eval_every=2), tmp_path).fit()
    synth = Synthesizer.load(tmp_path / "best.pt")  # the kind on file decides
    assert synth.checkpoint_info["kind"] == "tts-nat"
    assert synth.synthesize("Hello world.").focus_rate is None


def test_a_trained_model_warm_starts_another_attention_variant(trained, tmp_path):
    root, data, _ = trained
    init = torch.load(root / "run" / "best.pt", map_location="cpu", weights_only=False)
    dims = TTSDims(**{**init["dims"], "cross_attention": "monotonic",
                      "attention_options": {"noise_std": 1.0}})
    task = TransformerTTSTask(data, dims, init=init)
    shared = {k: v for k, v in task.model.state_dict().items() if "cross_attn" not in k}
    assert all(torch.equal(v, init["state_dict"][k].float()) for k, v in shared.items())
    dot = TransformerTTS(TTSDims(**{**init["dims"], "cross_attention": "dot"}))  # shares q, kv, out
    warm_start(task.model, {"state_dict": dot.state_dict()})
    assert torch.equal(task.model.decoder.layers[0].cross_attn.q.weight,
                       dot.decoder.layers[0].cross_attn.q.weight)
    Trainer(task, TrainConfig(max_steps=1, warmup_steps=1, eval_every=1), tmp_path).fit()
    saved = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)
    assert saved["dims"]["cross_attention"] == "monotonic"
    assert saved["initialised_from"]["progress"] == init["progress"]
    wider = TTSDims(**{**init["dims"], "d_model": 48})
    with pytest.raises(ValueError, match="does not fit"):
        TransformerTTSTask(data, wider, init=init)


def test_a_dot_model_starts_a_location_one_with_its_value_projection(trained):
    root, data, _ = trained
    init = torch.load(root / "run" / "best.pt", map_location="cpu", weights_only=False)
    dot = TransformerTTS(TTSDims(**{**init["dims"], "cross_attention": "dot"}))
    location = TransformerTTS(TTSDims(**{**init["dims"], "cross_attention": "location"}))
    warm_start(location, {"state_dict": dot.state_dict()})
    for a, b in zip(location.decoder.layers, dot.decoder.layers):
        d = b.cross_attn.kv.weight.size(1)
        assert torch.equal(a.cross_attn.value.weight, b.cross_attn.kv.weight[d:])
        assert torch.equal(a.cross_attn.out.weight, b.cross_attn.out.weight)


def _write_two_speakers(root):
    """The corpus twice, as speakers a and b (b's tones an octave up)."""
    manifest = _write_corpus(root)
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    with manifest.open("a") as f:
        for line in lines:
            f.write(json.dumps({**line, "id": line["id"].replace("slt", "b"), "speaker": "b"}) + "\n")
    return manifest


def test_a_multi_speaker_nat_model_warm_starts_from_a_single_speaker_one(tmp_path):
    torch.set_num_threads(1)
    manifest = _write_two_speakers(tmp_path)
    dims = dict(vocab_size=len(PhoneVocab()), d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1,
                n_decoder_layers=1, duration_channels=16, postnet_channels=16)
    single = FastSpeechTask(TTSDataConfig(manifest=str(manifest), speaker="slt", valid_size=2,
                                          max_batch_frames=400), FastSpeechDims(**dims))
    Trainer(single, TrainConfig(max_steps=2, warmup_steps=1, eval_every=2), tmp_path / "one").fit()
    init = torch.load(tmp_path / "one" / "best.pt", map_location="cpu", weights_only=False)

    data = TTSDataConfig(manifest=str(manifest), speaker="slt,b", valid_size=2, max_batch_frames=400)
    task = FastSpeechTask(data, FastSpeechDims(**dims, n_speakers=2), init=init)
    assert len(task.valid) == 2 and {u.speaker for u in task.valid} == {"slt", "b"}
    assert task.stats.to_dict() == init["stats"]  # the start's normalisation
    tokens = torch.tensor([[3, 4, 5]])
    with torch.no_grad():  # every speaker starts as the single-speaker model's voice
        single.model.load_state_dict({k: v.float() for k, v in init["state_dict"].items()})
        single.model.eval(), task.model.eval()
        expected = single.model(tokens).mel
        for speaker in (0, 1):
            got = task.model(tokens, speakers=torch.tensor([speaker])).mel
            assert torch.allclose(got, expected, atol=1e-5)
    Trainer(task, TrainConfig(max_steps=2, warmup_steps=1, eval_every=2), tmp_path / "two").fit()
    synth = Synthesizer.load(tmp_path / "two" / "best.pt")
    assert synth.voices == ["slt", "b"]
    assert synth.synthesize("Hello world.", voice="b").duration > 0
    with pytest.raises(ValueError, match="voice must be one of slt, b"):
        synth.synthesize("Hello world.", voice="awb")
