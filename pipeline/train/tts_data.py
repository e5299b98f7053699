"""The data both TTS recipes train on: one or several speakers' utterances of a manifest, their
log-mels and normalisation statistics, and flite's phone durations in frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.data.featcache import load_features
from pipeline.data.manifests import Utterance, read_manifest
from pipeline.frontend.features import TTS_FEATURES, FeatureConfig, FeatureStats


@dataclass(frozen=True)
class TTSDataConfig:
    manifest: str
    speaker: str = "flite-slt"  # or several, comma-separated: a multi-speaker model
    valid_size: int = 100  # utterances held out for validation (the last ids in sorted order)
    max_batch_frames: int = 12_000  # padded mel frames per batch
    max_utterance_seconds: float = 12.0
    limit: int | None = None  # use only the first N training utterances

    @property
    def speakers(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.speaker.split(",") if s.strip())


def phone_durations(phones: list[tuple[str, float]], n_frames: int, config: FeatureConfig) -> list[int]:
    """flite's (phone, end seconds) -> frames per phone, summing to `n_frames`."""
    ends, last = [], 0
    for _, end in phones:
        last = max(last, min(round(end / config.frame_seconds), n_frames))
        ends.append(last)
    ends[-1] = n_frames  # the last phone (a pause) takes what rounding left over
    return [b - a for a, b in zip([0] + ends[:-1], ends)]


def split_train_valid(utterances: list[Utterance], valid_size: int) -> tuple[list, list]:
    ordered = sorted(utterances, key=lambda u: u.id)
    return ordered[:-valid_size], ordered[-valid_size:]


class TTSCorpus:
    """The speakers' utterances of a manifest, split into training and validation (an equal
    share of `valid_size` each), with their log-mels (from the feature cache) and the training
    set's normalisation statistics."""

    def __init__(self, data: TTSDataConfig, require_phones: bool = False):
        self.data = data
        self.features = TTS_FEATURES
        speakers = data.speakers
        everything = [u for u in read_manifest(data.manifest, resolve_audio=True)
                      if u.speaker in speakers and (u.phones or not require_phones)
                      and u.duration <= data.max_utterance_seconds]
        self.train, self.valid = [], []
        for speaker in speakers:
            utterances = [u for u in everything if u.speaker == speaker]
            valid_size = max(1, data.valid_size // len(speakers))
            if len(utterances) <= valid_size:
                what = " with phones" if require_phones else ""
                raise ValueError(f"only {len(utterances)} utterances of {speaker}{what}")
            train, valid = split_train_valid(utterances, valid_size)
            self.train += train[: data.limit] if data.limit else train
            self.valid += valid
        self.mels = load_features(Path(data.manifest), self.train + self.valid, self.features)
        step = 1 if len(speakers) == 1 else max(1, len(self.train) // 2000)  # every speaker
        sample = self.train[::step][:2000]
        self.stats = FeatureStats.accumulate([self.mels[u.id].float() for u in sample])

    @property
    def utterances(self) -> list[Utterance]:
        return self.train + self.valid

    def describe(self) -> dict:
        return {"manifest": self.data.manifest, "speaker": self.data.speaker,
                "train_utterances": len(self.train),
                "train_hours": round(sum(u.duration for u in self.train) / 3600, 3)}
