"""The ASR recipe end to end on a few generated utterances: training with validation WER, an
exported checkpoint in the Recognizer, and fine-tuning from that export (`--init-from`)."""

import json

import numpy as np
import pytest
import torch

from models.asr import SpeechTransformer
from pipeline.frontend.audio import save_wav
from pipeline.inference.recognizer import Recognizer
from pipeline.train.asr import ASRDataConfig, ASRTask
from pipeline.train.loop import TrainConfig, Trainer, export_checkpoint

pytestmark = pytest.mark.slow  # trains a tiny model twice

SAMPLE_RATE = 16_000
WORDS = ["red", "green", "blue", "cat", "dog", "sun"]
TINY = dict(d_model=32, n_heads=2, d_ff=64, conv_channels=8, n_encoder_layers=1, n_decoder_layers=1)


def _write_corpus(root, n=24, seed=0, prefix="u"):
    """Each word a tone of its own pitch; sentences of two or three words."""
    rng = np.random.default_rng(seed)
    (root / "wavs").mkdir()
    with (root / "manifest.jsonl").open("w") as f:
        for i in range(n):
            words = list(rng.choice(WORDS, size=int(rng.integers(2, 4))))
            t = np.arange(int(0.2 * SAMPLE_RATE)) / SAMPLE_RATE
            parts = [0.3 * np.sin(2 * np.pi * (200 + 90 * WORDS.index(w)) * t) for w in words]
            wav = np.concatenate([np.zeros(1600), *parts, np.zeros(1600)])
            save_wav(root / "wavs" / f"u{i}.wav", torch.tensor(wav, dtype=torch.float32), SAMPLE_RATE)
            f.write(json.dumps({"id": f"{prefix}{i:02d}", "audio": f"wavs/u{i}.wav", "text": " ".join(words),
                                "duration": len(wav) / SAMPLE_RATE, "speaker": "tone"}) + "\n")
    (root / "text.txt").write_text("\n".join(" ".join(rng.choice(WORDS, 3)) for _ in range(50)))
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("asr")
    data = ASRDataConfig(manifest=str(_write_corpus(root)), text=str(root / "text.txt"),
                         vocab_size=24, valid_size=4, max_batch_frames=2000)
    config = TrainConfig(max_steps=4, warmup_steps=1, eval_every=2, save_every=2, log_every=1)
    task = ASRTask(data, dims_overrides=TINY)
    metrics = Trainer(task, config, root / "run").fit()
    return root, data, config, metrics


def test_training_logs_validation_wer_and_resumes(run):
    root, data, config, metrics = run
    assert {"wer_ctc_greedy", "wer_attention_greedy", "score"} <= set(metrics)
    log = [json.loads(line) for line in (root / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "eval" in r] == [2, 4]
    assert (root / "run" / "best.pt").exists()
    # a second run with a higher step limit resumes at step 4 with the same units
    last = torch.load(root / "run" / "last.pt", weights_only=False)
    from pipeline.frontend.tokenizer import SubwordTokenizer

    task = ASRTask(data, tokenizer=SubwordTokenizer.from_dict(last["tokenizer"]), dims_overrides=TINY)
    trainer = Trainer(task, TrainConfig(**{**config.__dict__, "max_steps": 5}), root / "run")
    trainer.fit()
    assert trainer.step == 5 and len(trainer.commands) == 2


def test_export_fine_tunes_from_its_weights_units_and_normalisation(run, tmp_path):
    root, data, config, _ = run
    shipped = export_checkpoint(root / "run" / "best.pt", tmp_path / "asr.pt")
    transcript = Recognizer.load(shipped).transcribe(root / "wavs" / "u0.wav")
    assert isinstance(transcript.text, str)  # the export is a working model
    init = torch.load(shipped, weights_only=True)
    task = ASRTask(data, init=init)
    for name, value in task.model.state_dict().items():
        assert torch.equal(value, init["state_dict"][name].float()), name
    assert task.stats.to_dict() == init["stats"]
    assert task.tokenizer.to_dict() == init["tokenizer"]
    Trainer(task, TrainConfig(max_steps=1, warmup_steps=1, eval_every=1), tmp_path / "tune").fit()
    tuned = torch.load(tmp_path / "tune" / "best.pt", weights_only=False)
    assert tuned["initialised_from"]["progress"]["step"] == init["progress"]["step"]
    again = ASRTask(data, init=tuned)  # a fine-tune of a fine-tune keeps the whole chain
    Trainer(again, TrainConfig(max_steps=1, warmup_steps=1, eval_every=1), tmp_path / "again").fit()
    chain = torch.load(tmp_path / "again" / "best.pt", weights_only=False)["initialised_from"]
    assert chain["progress"] == tuned["progress"]
    assert chain["initialised_from"]["progress"]["step"] == init["progress"]["step"]


def test_right_to_left_decoder_trains_alone_on_the_frozen_model(run, tmp_path):
    """--r2l-only: the fine-tune adds a right-to-left decoder, a copy of the other, trains only
    it, and follows its greedy WER; the export is a recogniser that rescores with it."""
    from dataclasses import replace

    root, data, _, _ = run
    shipped = export_checkpoint(root / "run" / "best.pt", tmp_path / "asr.pt")
    init = torch.load(shipped, weights_only=True)
    task = ASRTask(replace(data, r2l_only=True), init=init)
    start = {k: v.clone() for k, v in task.model.state_dict().items()}
    assert task.model.dims.n_r2l_decoder_layers == task.model.dims.n_decoder_layers
    assert torch.equal(start["r2l.out.weight"], start["out.weight"])
    metrics = Trainer(task, TrainConfig(max_steps=3, warmup_steps=1, eval_every=3, peak_lr=1e-2),
                      tmp_path / "r2l").fit()
    assert set(metrics) == {"loss", "wer_r2l_greedy", "score"}
    assert metrics["score"] == metrics["wer_r2l_greedy"]
    after = task.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in start.items() if not k.startswith("r2l."))
    assert any(not torch.equal(after[k], v) for k, v in start.items() if k.startswith("r2l."))
    exported = export_checkpoint(tmp_path / "r2l" / "last.pt", tmp_path / "asr-r2l.pt")
    recognizer = Recognizer.load(exported)
    assert recognizer.model.r2l is not None
    assert isinstance(recognizer.transcribe(root / "wavs" / "u0.wav", beam_size=3).text, str)


def test_snapshots_are_kept_and_average_with_the_model_they_tuned(run, tmp_path):
    """--keep-snapshots: each save's weights on their own (fp16, no optimizer), which average
    with the exported model they were fine-tuned from into a working recogniser."""
    from pipeline.checkpoints import average_checkpoints, load_checkpoint

    root, data, _, _ = run
    shipped = export_checkpoint(root / "run" / "best.pt", tmp_path / "asr.pt")
    task = ASRTask(data, init=torch.load(shipped, weights_only=True))
    config = TrainConfig(max_steps=4, warmup_steps=1, eval_every=4, save_every=2, keep_snapshots=True)
    Trainer(task, config, tmp_path / "tune").fit()
    paths = sorted((tmp_path / "tune" / "snapshots").iterdir())
    assert [p.name for p in paths] == ["step-000002.pt", "step-000004.pt"]
    snapshots = [load_checkpoint(p, kinds=("asr",)) for p in paths]
    assert all("optimizer" not in s and s["progress"]["step"] in (2, 4) for s in snapshots)
    assert all(v.dtype == torch.float16 for s in snapshots for v in s["state_dict"].values()
               if v.is_floating_point())
    averaged = average_checkpoints([load_checkpoint(shipped), *snapshots], [2, 1, 1])
    torch.save(averaged, tmp_path / "averaged.pt")
    assert isinstance(Recognizer.load(tmp_path / "averaged.pt", lexicon=False)
                      .transcribe(root / "wavs" / "u0.wav").text, str)


def test_random_equalizer_is_smooth_bounded_and_seeded():
    import math
    import random

    from pipeline.train.asr import random_equalizer

    db = math.log(10) / 10
    curves = [random_equalizer(80, 6.0, random.Random(seed)) for seed in range(20)]
    assert all(c.shape == (80,) and c.abs().max() <= 6.0 * db + 1e-5 for c in curves)
    assert max(c.abs().max() for c in curves) > 3.0 * db  # it does reach the range
    assert all((c[1:] - c[:-1]).abs().max() < 1.0 * db for c in curves)  # smooth: < 1 dB a bin
    torch.testing.assert_close(random_equalizer(80, 6.0, random.Random(3)), curves[3])


def _plain_and_augmented(data, **augment):
    """Two tasks on the same corpus with SpecAugment and tempo off: one with `augment` only."""
    from dataclasses import replace

    plain = replace(data, spec_augment=False, tempo=(1.0, 1.0))
    return (ASRTask(plain, dims_overrides=TINY), ASRTask(replace(plain, **augment), dims_overrides=TINY))


def test_channel_augment_adds_one_curve_per_utterance(run):
    """With masks and tempo off, a training batch differs from the plain one by a per-bin offset
    constant over each utterance's frames; validation batches are left alone."""
    plain, augmented = _plain_and_augmented(run[1], channel_db=6.0)
    utterances = plain.train[:3]
    x0, lengths, *_ = plain.collate(utterances, train=True)
    x1, *_ = augmented.collate(utterances, train=True)
    for b, n in enumerate(lengths.tolist()):
        offset = x1[b, :n] - x0[b, :n]  # (T, F): one row repeated
        assert offset.abs().max() > 0
        torch.testing.assert_close(offset, offset[:1].expand_as(offset), atol=1e-4, rtol=0)
    torch.testing.assert_close(augmented.collate(utterances, train=False)[0],
                               plain.collate(utterances, train=False)[0])


def test_random_silence_keeps_the_speech_and_redraws_each_pause():
    import random

    from pipeline.train.asr import random_silence

    floor = torch.full((80,), -11.5)
    speech = torch.randn(50, 80)
    speech[0, :] = speech[1:].max() - 5.0  # a faint onset, 43 dB below the peak, is speech
    x = torch.cat([floor.expand(20, -1), speech, floor.expand(30, -1)])
    pauses = set()
    for seed in range(30):
        y = random_silence(x, 40, random.Random(seed))
        loud = (y > -11).any(dim=1).nonzero()[:, 0]
        lead, trail = int(loud[0]), y.size(0) - 1 - int(loud[-1])
        assert 0 <= lead <= 40 and 0 <= trail <= 40
        torch.testing.assert_close(y[lead: lead + 50], speech)
        torch.testing.assert_close(y[:lead], floor.expand(lead, -1))
        pauses.add((lead, trail))
    assert len(pauses) > 20  # drawn anew, not a fixed trim
    # speech from its first sample (espeak-ng) gets silence before it too
    assert any(random_silence(speech, 40, random.Random(s)).size(0) > 50 for s in range(5))


def test_silence_augment_changes_training_batches_only(run):
    plain, augmented = _plain_and_augmented(run[1], silence_seconds=0.3)
    utterances = plain.train[:8]
    _, plain_lengths, *_ = plain.collate(utterances, train=True)
    _, lengths, *_ = augmented.collate(utterances, train=True)
    # the corpus's 0.1 s pauses (10 frames each end) become 0-30 frames each end
    assert (lengths - plain_lengths).abs().max() > 0
    assert ((lengths - plain_lengths).abs() <= 40).all()
    torch.testing.assert_close(augmented.collate(utterances, train=False)[0],
                               plain.collate(utterances, train=False)[0])


def test_add_noise_on_log_mels_matches_mixing_the_waveforms():
    """Speech-like audio (tones with silences between) plus white noise: the log-mel of the
    mixed waveform and `add_noise` on the two log-mels agree closely, at SNRs where the noise
    changes the features a lot; the SNR is the mel-power ratio it was asked for."""
    from pipeline.frontend.features import ASR_FEATURES, LogMel
    from pipeline.train.asr import add_noise

    logmel = LogMel(ASR_FEATURES)
    t = torch.arange(8000) / SAMPLE_RATE
    tones = [0.3 * torch.sin(2 * torch.pi * f * t) * torch.hann_window(8000) for f in (220, 660, 1500)]
    speech = torch.cat([torch.zeros(3200), tones[0], torch.zeros(1600), tones[1], tones[2], torch.zeros(3200)])
    noise = torch.randn(speech.shape, generator=torch.Generator().manual_seed(0))
    x, n = logmel(speech)[0][0], logmel(noise)[0][0].exp()
    for snr in (10.0, 25.0, 40.0):
        mixed = add_noise(x, n, snr, ASR_FEATURES.log_floor)
        ratio = x.exp().pow(2).mean() / (mixed.exp().pow(2) - x.exp().pow(2)).mean()
        assert abs(10 * torch.log10(ratio) - snr) < 0.1
        gain = (x.exp().pow(2).mean() / (n.pow(2).mean() * 10 ** (snr / 10))).sqrt()
        real = logmel(speech + gain * noise)[0][0]
        assert (real - x).abs().mean() > 0.5  # the noise matters ...
        assert (mixed - real).abs().mean() < 0.15  # ... and is modelled to within a fraction of that


def test_random_noise_draws_level_colour_and_stretch_per_utterance():
    import random

    from pipeline.frontend.features import ASR_FEATURES
    from pipeline.train.asr import noise_bank, random_noise

    bank = noise_bank(ASR_FEATURES, seconds=2.0)
    x = torch.full((300, 80), -11.5)  # longer than the bank: digital silence gets a noise floor
    x[100:200] = torch.randn(100, 80)
    outs = [random_noise(x, bank, (10.0, 40.0), ASR_FEATURES.log_floor, random.Random(s)) for s in range(6)]
    assert all(o.shape == x.shape and (o[:100] > -11).all() for o in outs)
    floors = [float(o[:100].mean()) for o in outs]
    assert max(floors) - min(floors) > 1.0  # a different level each time
    torch.testing.assert_close(outs[2], random_noise(x, bank, (10.0, 40.0), ASR_FEATURES.log_floor,
                                                     random.Random(2)))


def test_noise_augment_changes_training_batches_only(run):
    plain, noisy = _plain_and_augmented(run[1], noise_snr=(10.0, 20.0), noise_prob=1.0)
    utterances = plain.train[:4]
    x0, lengths, *_ = plain.collate(utterances, train=True)
    x1, lengths1, *_ = noisy.collate(utterances, train=True)
    assert torch.equal(lengths, lengths1)
    for b, n in enumerate(lengths.tolist()):
        assert (x1[b, :n] - x0[b, :n]).abs().mean() > 0.1
    torch.testing.assert_close(noisy.collate(utterances, train=False)[0],
                               plain.collate(utterances, train=False)[0])


def test_warp_frequency_moves_a_formant_by_alpha_and_keeps_the_band_edges():
    """A single spectral peak (a formant) at 1 kHz moves to ~1.1 kHz at alpha 1.1 and ~0.9 kHz at
    0.9; alpha 1 changes nothing; the top band stays where it is."""
    from pipeline.frontend.features import ASR_FEATURES
    from pipeline.train.asr import mel_centres, warp_frequency

    centres = mel_centres(ASR_FEATURES)
    assert centres.shape == (80,) and 0 < centres[0] < 100 and 7_500 < centres[-1] < 8_000
    peak = int((centres - 1_000).abs().argmin())
    x = torch.full((5, 80), -5.0)
    x[:, peak] = 0.0
    x[:, -1] = 1.0  # energy at the band edge
    torch.testing.assert_close(warp_frequency(x, 1.0, centres), x)
    for alpha in (0.9, 1.1):
        y = warp_frequency(x, alpha, centres)
        moved = float(centres[int(y[0, :60].argmax())])
        assert abs(moved / (alpha * float(centres[peak])) - 1) < 0.04, (alpha, moved)
        torch.testing.assert_close(y[:, -1], x[:, -1])
        torch.testing.assert_close(y[1:], y[:1].expand(4, -1))  # the same warp for every frame


def test_vtlp_augment_changes_training_batches_only(run):
    plain, warped = _plain_and_augmented(run[1], vtlp=0.1)
    utterances = plain.train[:4]
    x0, lengths, *_ = plain.collate(utterances, train=True)
    x1, lengths1, *_ = warped.collate(utterances, train=True)
    assert torch.equal(lengths, lengths1)
    assert all((x1[b, :n] - x0[b, :n]).abs().mean() > 0.01 for b, n in enumerate(lengths.tolist()))
    torch.testing.assert_close(warped.collate(utterances, train=False)[0],
                               plain.collate(utterances, train=False)[0])


def test_speed_augment_warps_and_stretches_by_one_factor(run):
    """Speed s: the spectrum moves up by s (the warp) and the utterance lasts 1/s as long; the
    factor is drawn per utterance and validation batches are left alone."""
    import random

    from pipeline.frontend.features import stretch
    from pipeline.train.asr import warp_frequency

    plain, fast = _plain_and_augmented(run[1], speed=0.1)
    utterances = plain.train[:4]
    fast.rng = random.Random(7)
    rng = random.Random(7)
    speeds = [rng.uniform(0.9, 1.1) for _ in utterances]
    x, lengths, *_ = fast.collate(utterances, train=True)
    for b, (u, s) in enumerate(zip(utterances, speeds)):
        mel = fast.mels[u.id].float()
        expected = stretch(fast.stats.normalize(warp_frequency(mel, s, fast.centres)), s)
        assert int(lengths[b]) == expected.size(0) == max(2, round(mel.size(0) / s))
        torch.testing.assert_close(x[b, : lengths[b]], expected)
    assert len({round(s, 3) for s in speeds}) == len(speeds)
    torch.testing.assert_close(fast.collate(utterances, train=False)[0],
                               plain.collate(utterances, train=False)[0])


def test_corpora_train_together_each_read_from_its_own_manifest(run, tmp_path):
    from dataclasses import replace

    data = run[1]
    (tmp_path / "other").mkdir()
    other = _write_corpus(tmp_path / "other", n=12, seed=1, prefix="v")
    one = ASRTask(data, dims_overrides=TINY)
    both = ASRTask(replace(data, manifest=(data.manifest, str(other))), dims_overrides=TINY)
    ids = {u.id for u in both.train + both.valid}  # the validation set is capped at valid_size
    assert ids <= {f"u{i:02d}" for i in range(24)} | {f"v{i:02d}" for i in range(12)}
    assert len(both.train) > len(one.train) and any(i.startswith("v") for i in ids)
    assert set(both.mels) == ids
    torch.testing.assert_close(both.mels["u05"], one.mels["u05"])
    second = ASRTask(replace(data, manifest=str(other)), dims_overrides=TINY)
    torch.testing.assert_close(both.mels["v05"], second.mels["v05"])  # its own audio, not u5.wav
    # the same corpus twice is the corpus once
    twice = ASRTask(replace(data, manifest=(data.manifest, data.manifest)), dims_overrides=TINY)
    assert [u.id for u in twice.train] == [u.id for u in one.train]


def test_wave_augment_reads_the_audio_again_for_training_batches_only(run):
    from pipeline.train.augment import WaveAugment

    wave = WaveAugment(trim_share=1.0, speed=0.2, reverb_share=1.0, noise_share=1.0)
    plain, augmented = _plain_and_augmented(run[1], wave=wave)
    utterances = plain.train[:8]
    x, lengths, *_ = augmented.collate(utterances, train=True)
    _, plain_lengths, *_ = plain.collate(utterances, train=True)
    assert torch.isfinite(x).all()
    # trimming takes the corpus's 0.1 s pauses away, speed changes the rest by up to 20%
    assert (lengths < plain_lengths).float().mean() > 0.5
    torch.testing.assert_close(augmented.collate(utterances, train=False)[0],
                               plain.collate(utterances, train=False)[0])
    assert augmented.checkpoint()["data"]["wave_augment"]["speed"] == 0.2


def test_repeats_hear_a_corpus_that_many_times_an_epoch(run, tmp_path):
    from dataclasses import replace

    data = run[1]
    (tmp_path / "small").mkdir()
    small = _write_corpus(tmp_path / "small", n=6, seed=2, prefix="w")
    task = ASRTask(replace(data, manifest=(data.manifest, str(small)), repeats=(1, 3)),
                   dims_overrides=TINY)
    counts = {}
    for u in task.train:
        counts[u.id] = counts.get(u.id, 0) + 1
    assert {counts[i] for i in counts if i.startswith("w")} == {3}
    assert {counts[i] for i in counts if i.startswith("u")} == {1}
    with pytest.raises(ValueError, match="repeats"):
        ASRTask(replace(data, manifest=(data.manifest, str(small)), repeats=(1,)), dims_overrides=TINY)


def test_utterances_longer_than_the_limit_are_left_out(run):
    from dataclasses import replace

    data = run[1]
    every = ASRTask(data, dims_overrides=TINY)
    short = ASRTask(replace(data, max_utterance_seconds=0.7), dims_overrides=TINY)  # two words
    kept = short.train + short.valid
    assert kept and all(u.duration <= 0.7 for u in kept)
    assert len(kept) < len(every.train + every.valid)
    assert all(u.id in short.mels for u in kept)


def test_train_command_leaves_out_utterances_over_max_seconds(run, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli.train import train_group

    root, data = run[0], run[1]
    args = ["asr", "--manifest", data.manifest, "--text", str(root / "text.txt"),
            "--vocab-size", "24", "--d-model", "32", "--conv-channels", "8", "--encoder-layers", "1",
            "--decoder-layers", "1", "--batch-frames", "2000", "--max-steps", "1", "--threads", "1"]
    for limit, out in ((20.0, "all"), (0.7, "short")):
        result = CliRunner().invoke(train_group, [*args, "--max-seconds", str(limit), "--out",
                                                  str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    recorded = {out: torch.load(tmp_path / out / "last.pt", weights_only=False)["data"]
                for out in ("all", "short")}
    assert recorded["short"]["max_utterance_seconds"] == 0.7
    assert 0 < recorded["short"]["train_utterances"] < recorded["all"]["train_utterances"]
    none = CliRunner().invoke(train_group, [*args, "--max-seconds", "0.1", "--out",
                                            str(tmp_path / "none")])
    assert none.exit_code == 1 and "0 distinct transcripts" in none.output


def test_loader_workers_make_the_same_augmented_batches_as_the_loop(run):
    """Each batch draws from its own (seed, epoch, batch) generator, masks included, so worker
    processes give the batches the loop itself would: equal, and different between epochs."""
    from dataclasses import replace

    from pipeline.train.augment import WaveAugment

    data = replace(run[1], channel_db=6.0, vtlp=0.1, max_batch_frames=300,
                   wave=WaveAugment(trim_share=0.5, speed=0.1, pitch=2, noise_share=0.5))
    loop = list(ASRTask(data, dims_overrides=TINY).batches(0))
    workers = list(ASRTask(replace(data, loader_workers=2), dims_overrides=TINY).batches(0))
    assert len(loop) == len(workers) > 1
    for a, b in zip(loop, workers):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)
    task = ASRTask(data, dims_overrides=TINY)
    utterances = task.train[:4]
    same = [task.training_batch(utterances, 0, 3)[0] for _ in range(2)]
    torch.testing.assert_close(*same)
    other_epoch = task.training_batch(utterances, 1, 3)[0]
    assert other_epoch.shape != same[0].shape or not torch.equal(other_epoch, same[0])


def test_distil_weight_keeps_the_starting_model_on_the_first_corpus(run, tmp_path):
    """--distil-weight: the utterances of the first manifest carry the teacher's outputs, and a
    fine-tune that keeps them drifts less from the model it started from there than one that
    does not, from the same start and batches."""
    from dataclasses import replace

    root, data, _, _ = run
    (tmp_path / "new").mkdir()
    other = _write_corpus(tmp_path / "new", n=12, seed=1, prefix="v")
    shipped = export_checkpoint(root / "run" / "best.pt", tmp_path / "asr.pt")
    init = torch.load(shipped, weights_only=True)
    both = replace(data, manifest=(data.manifest, str(other)))
    with pytest.raises(ValueError, match="teacher"):
        ASRTask(replace(both, distil_weight=1.0), init=init)

    def drift(weight: float) -> float:
        task = ASRTask(replace(both, distil_weight=weight), init=init,
                       teacher=init if weight else None)
        config = TrainConfig(max_steps=6, warmup_steps=1, eval_every=6, peak_lr=3e-2, seed=0)
        Trainer(task, config, tmp_path / f"tune-{weight}").fit()
        known = [u for u in task.train if u.id.startswith("u")][:8]
        new = [u for u in task.train if u.id.startswith("v")][:4]
        assert not bool(task.collate(new, train=False)[-1].any())  # never the other corpora's
        x, lengths, targets, target_lengths, distilled = task.collate(known, train=False)
        assert bool(distilled.all()) == bool(weight)
        task.model.eval()
        teacher = SpeechTransformer(task.model.dims)
        teacher.load_state_dict({k: v.float() for k, v in init["state_dict"].items()})
        soft = teacher.eval().soft_targets(x, lengths, targets, target_lengths,
                                           torch.ones(len(known), dtype=torch.bool))
        with torch.no_grad():
            losses = task.model.loss(x, lengths, targets, target_lengths, teacher=soft,
                                     distil_weight=1.0)
        return float(losses["distil_ctc"] + losses["distil_attention"])

    kept, free = drift(5.0), drift(0.0)
    assert kept < 0.5 * free
    recorded = torch.load(tmp_path / "tune-5.0" / "last.pt", weights_only=False)["data"]
    assert recorded["distil_weight"] == 5.0


def test_train_command_distils_only_from_the_model_it_starts_from(run, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli.train import train_group

    result = CliRunner().invoke(train_group, ["asr", "--manifest", run[1].manifest,
                                              "--distil-weight", "1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--init-from" in result.output
