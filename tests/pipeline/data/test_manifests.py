"""Manifests, the LJSpeech and LibriSpeech readers, bucketed batching and padding."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.data.manifests import (
    BucketBatchSampler,
    Utterance,
    librispeech_manifest,
    ljspeech_manifest,
    pad_sequences,
    read_manifest,
    write_manifest,
)

RATE = 16_000


def _write_tone(path: Path, seconds: float, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), RATE, format=fmt)


# ---------------------------------------------------------------- manifests


def test_manifest_round_trip(tmp_path):
    utterances = [
        Utterance("a", "wavs/a.wav", "Hello there.", 1.25, "flite-slt",
                  phones=[("pau", 0.1), ("hh", 0.15), ("ax", 0.2)]),
        Utterance("b", "/abs/b.wav", "Caf\u00e9 \u201cquotes\u201d", 2.0, "espeak-ng-en-us"),
        Utterance("c", "c.wav", "", 0.5),
    ]
    path = write_manifest(tmp_path / "sub" / "manifest.jsonl", utterances)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert set(first) == {"id", "audio", "text", "duration", "speaker", "phones"}
    assert "phones" not in json.loads(lines[1])  # optional field left out when absent
    assert read_manifest(path) == utterances
    assert not list(path.parent.glob("*.tmp"))


def test_read_manifest_resolves_relative_audio(tmp_path):
    write_manifest(tmp_path / "m.jsonl", [Utterance("a", "wavs/a.wav", "x", 1.0),
                                          Utterance("b", "/abs/b.wav", "y", 1.0)])
    a, b = read_manifest(tmp_path / "m.jsonl", resolve_audio=True)
    assert a.audio == str((tmp_path / "wavs" / "a.wav").resolve())
    assert b.audio == "/abs/b.wav"


def test_read_manifest_names_the_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "audio": "a.wav"}\n\n{"audio": "no id"}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:3"):
        read_manifest(path)


# ---------------------------------------------------------------- corpus readers


def test_ljspeech_reader(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    rows = [("LJ001-0001", "Printing, in the only sense 1", "Printing, in the only sense one"),
            ("LJ001-0002", "in being comparatively modern.", "in being comparatively modern.")]
    for i, (uid, _, _) in enumerate(rows):
        _write_tone(root / "wavs" / f"{uid}.wav", 0.5 + 0.25 * i)
    (root / "metadata.csv").write_text("".join("|".join(r) + "\n" for r in rows), encoding="utf-8")
    manifest = ljspeech_manifest(root)
    assert [u.id for u in manifest] == ["LJ001-0001", "LJ001-0002"]
    assert manifest[0].text == "Printing, in the only sense one"  # the normalised column
    assert manifest[0].speaker == "ljspeech"
    assert Path(manifest[0].audio) == root / "wavs" / "LJ001-0001.wav"
    assert [u.duration for u in manifest] == pytest.approx([0.5, 0.75])
    write_manifest(tmp_path / "lj.jsonl", manifest)
    assert read_manifest(tmp_path / "lj.jsonl") == manifest


def test_librispeech_reader(tmp_path):
    root = tmp_path / "LibriSpeech" / "dev-clean"
    chapters = {("84", "121123"): ["84-121123-0000 GO DO YOU HEAR", "84-121123-0001 BUT IN LESS"],
                ("174", "50561"): ["174-50561-0000 FORGOTTEN TOO THE NAME OF GILLIAN"]}
    for (speaker, chapter), lines in chapters.items():
        folder = root / speaker / chapter
        for i, line in enumerate(lines):
            _write_tone(folder / f"{line.split()[0]}.flac", 0.4 + 0.2 * i, fmt="FLAC")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    manifest = librispeech_manifest(tmp_path / "LibriSpeech")
    assert sorted(u.id for u in manifest) == ["174-50561-0000", "84-121123-0000", "84-121123-0001"]
    by_id = {u.id: u for u in manifest}
    assert by_id["84-121123-0001"].text == "but in less"
    assert by_id["84-121123-0001"].speaker == "84"
    assert by_id["84-121123-0001"].duration == pytest.approx(0.6, abs=1e-3)
    assert by_id["174-50561-0000"].audio.endswith("174/50561/174-50561-0000.flac")


# ---------------------------------------------------------------- bucketed batches


def _lengths(n: int = 500, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.randint(40, 800) for _ in range(n)]


def test_bucket_batches_bound_the_padded_total_and_use_every_item_once():
    lengths = _lengths()
    sampler = BucketBatchSampler(lengths, max_total=4000, max_items=32)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 32
        assert max(lengths[i] for i in batch) * len(batch) <= 4000
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert 1 - sum(lengths) / padded < 0.15  # sorting by length keeps padding low


def test_an_item_longer_than_the_bound_gets_a_batch_of_its_own():
    sampler = BucketBatchSampler([10, 10, 5000, 10], max_total=100, shuffle=False)
    assert [2] in list(sampler)


def test_bucket_batches_are_deterministic_per_epoch():
    lengths = _lengths()
    a = BucketBatchSampler(lengths, max_total=3000, seed=7)
    b = BucketBatchSampler(lengths, max_total=3000, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 == list(b)
    a.set_epoch(0)
    assert list(a) != epoch1  # a new order each epoch, the same batches
    assert sorted(map(sorted, list(a))) == sorted(map(sorted, epoch1))


def test_shortest_first_runs_the_first_epoch_in_length_order():
    lengths = _lengths()
    sampler = BucketBatchSampler(lengths, max_total=3000, shortest_first=True)
    longest = [max(lengths[i] for i in b) for b in sampler]
    assert longest == sorted(longest)
    sampler.set_epoch(1)
    assert [max(lengths[i] for i in b) for b in sampler] != longest


def test_bucket_sampler_rejects_a_bad_bound():
    with pytest.raises(ValueError):
        BucketBatchSampler([1, 2], max_total=0)


def test_pad_sequences():
    seqs = [torch.ones(3, 2), torch.full((5, 2), 2.0), torch.zeros(1, 2)]
    padded, lengths = pad_sequences(seqs, value=-1.0)
    assert padded.shape == (3, 5, 2)
    assert lengths.tolist() == [3, 5, 1]
    assert (padded[0, 3:] == -1).all() and (padded[0, :3] == 1).all()
    assert torch.equal(padded[1], seqs[1])
