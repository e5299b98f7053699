"""Manifests, corpus readers, length-bucketed batching and collation.

A manifest is JSONL, one utterance a line (lhotse's idea, not its size):
`{"id", "audio", "text", "duration", "speaker"}` plus optional `"phones"`, flite's phone
segmentation as `[[phone, end_seconds], ...]`. Audio paths are relative to the manifest's folder
unless absolute.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from models.transformer import lengths_to_mask  # noqa: F401  (re-exported for pipeline users)


@dataclass
class Utterance:
    id: str
    audio: str
    text: str
    duration: float  # seconds
    speaker: str = ""
    phones: list[tuple[str, float]] | None = field(default=None)  # (phone, end seconds)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.phones is None:
            d.pop("phones")
        else:
            d["phones"] = [[p, round(t, 4)] for p, t in self.phones]
        return d

    @staticmethod
    def from_dict(d: dict) -> "Utterance":
        phones = d.get("phones")
        return Utterance(
            id=str(d["id"]),
            audio=str(d["audio"]),
            text=str(d.get("text", "")),
            duration=float(d.get("duration", 0.0)),
            speaker=str(d.get("speaker", "")),
            phones=[(str(p), float(t)) for p, t in phones] if phones else None,
        )


def read_manifest(path: str | Path, resolve_audio: bool = False) -> list[Utterance]:
    """Read a JSONL manifest; with `resolve_audio`, audio paths become absolute."""
    path = Path(path)
    out = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                u = Utterance.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: not a manifest record ({e})") from None
            if resolve_audio and not Path(u.audio).is_absolute():
                u.audio = str((path.parent / u.audio).resolve())
            out.append(u)
    return out


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for u in utterances:
            f.write(json.dumps(u.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def ljspeech_manifest(root: str | Path) -> list[Utterance]:
    """LJSpeech layout: `metadata.csv` (id|text|normalised text) and `wavs/<id>.wav`."""
    import soundfile as sf

    root = Path(root)
    out = []
    with (root / "metadata.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE):
            if not row:
                continue
            uid, text = row[0], row[-1]  # the last column is the normalised text
            wav = root / "wavs" / f"{uid}.wav"
            out.append(Utterance(uid, str(wav), text, sf.info(str(wav)).duration, "ljspeech"))
    return out


def librispeech_manifest(root: str | Path) -> list[Utterance]:
    """LibriSpeech layout: `<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` beside flac files."""
    import soundfile as sf

    out = []
    for trans in sorted(Path(root).rglob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            uid, _, text = line.partition(" ")
            if not uid:
                continue
            audio = trans.parent / f"{uid}.flac"
            speaker = uid.split("-")[0]
            out.append(Utterance(uid, str(audio), text.lower(), sf.info(str(audio)).duration, speaker))
    return out


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of similar length bounded by total length (frames or seconds), not count.

    Sorting by length keeps padding low; shuffling the batches (not their contents) keeps
    training stochastic. With `shortest_first`, the first epoch runs short batches in
    order, which helps attention models find their alignment early.
    """

    def __init__(
        self,
        lengths: Sequence[float],
        max_total: float,
        max_items: int = 512,
        shuffle: bool = True,
        seed: int = 0,
        shortest_first: bool = False,
    ):
        if max_total <= 0:
            raise ValueError("max_total must be positive")
        self.lengths = list(lengths)
        self.max_total = max_total
        self.max_items = max_items
        self.shuffle = shuffle
        self.seed = seed
        self.shortest_first = shortest_first
        self.epoch = 0
        self.batches = self._make_batches()

    def _make_batches(self) -> list[list[int]]:
        order = sorted(range(len(self.lengths)), key=lambda i: self.lengths[i])
        batches, batch, longest = [], [], 0.0
        for i in order:
            longest_if_added = max(longest, self.lengths[i])
            # padded cost: every item is as long as the longest one
            if batch and (longest_if_added * (len(batch) + 1) > self.max_total
                          or len(batch) >= self.max_items):
                batches.append(batch)
                batch, longest_if_added = [], self.lengths[i]
            batch.append(i)
            longest = longest_if_added
        if batch:
            batches.append(batch)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        batches = list(self.batches)
        if self.shuffle and not (self.shortest_first and self.epoch == 0):
            random.Random(self.seed + self.epoch).shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return len(self.batches)


def pad_sequences(seqs: Sequence[torch.Tensor], value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (T_i, ...) tensors -> (B, T_max, ...) padded tensor and (B,) lengths."""
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    out = seqs[0].new_full((len(seqs), int(lengths.max()), *seqs[0].shape[1:]), value)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out, lengths
