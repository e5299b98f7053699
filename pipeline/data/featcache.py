"""Log-mel features of a manifest, computed once and cached beside it.

Training reads every utterance many times; decoding audio and computing the STFT each time
would cost more CPU than a small model's forward pass. The cache is keyed by the feature
config, so ASR and TTS features of one corpus live side by side.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from pipeline.data.manifests import Utterance
from pipeline.frontend.audio import load_audio
from pipeline.frontend.features import FeatureConfig, LogMel


def cache_path(manifest: Path, config: FeatureConfig) -> Path:
    key = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return manifest.parent / "features" / f"{manifest.stem}-{key}.pt"


def load_features(
    manifest: Path, utterances: list[Utterance], config: FeatureConfig, progress: bool = True,
    workers: int | None = None,
) -> dict[str, torch.Tensor]:
    """id -> (T, n_mels) float16 log-mel for every utterance, from the cache where present.

    Missing utterances are computed by `workers` threads (default: one per core, at most 16);
    decoding and the STFT release the GIL, so threads scale without copying tensors between
    processes.
    """
    from tqdm import tqdm

    path = cache_path(Path(manifest), config)
    cached: dict[str, torch.Tensor] = torch.load(path) if path.exists() else {}
    missing = [u for u in utterances if u.id not in cached]
    if missing:
        logmel = LogMel(config)

        def compute(u: Utterance) -> torch.Tensor:
            wav = load_audio(u.audio, config.sample_rate)  # peak-normalised, as at inference
            return logmel(wav)[0][0].half()

        workers = workers or min(16, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            mels = pool.map(compute, missing)
            for u, mel in tqdm(zip(missing, mels), total=len(missing), desc="features",
                               disable=not progress, unit="utt"):
                cached[u.id] = mel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # runs may share a corpus
        torch.save(cached, tmp)
        tmp.replace(path)
    return {u.id: cached[u.id] for u in utterances}
