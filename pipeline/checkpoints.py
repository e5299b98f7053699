"""Where the shipped models live, and loading a checkpoint file safely.

A checkpoint is a plain dict: `{kind, dims, state_dict, features, stats, vocab, train_config,
metrics, ...}`; nothing else is needed to rebuild the model. Loading uses torch's
weights-only unpickler, so a checkpoint file cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# shipped checkpoints, by role; SPEECHQ_CHECKPOINTS points elsewhere (a docker volume, say)
DEFAULT_NAMES = {
    "tts-nat": "tts-nat.pt",
    "tts-ar": "tts-ar-monotonic.pt",
    "asr": "asr.pt",
    "lm": "lm.pt",  # the recogniser's language model
    "lexicon": "lexicon.txt",  # and its word list (pipeline.lexicon)
}


class CheckpointError(ValueError):
    pass


def checkpoint_dir() -> Path:
    return Path(os.environ.get("SPEECHQ_CHECKPOINTS", REPO_ROOT / "checkpoints"))


def default_checkpoint(role: str) -> Path:
    if role not in DEFAULT_NAMES:
        raise CheckpointError(f"unknown model role {role!r}; one of {sorted(DEFAULT_NAMES)}")
    return checkpoint_dir() / DEFAULT_NAMES[role]


def load_checkpoint(path: str | os.PathLike, kinds: tuple[str, ...] | None = None) -> dict:
    """Read a checkpoint; with `kinds`, refuse a checkpoint of another kind."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"{path}: not a speechq checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "kind" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a speechq checkpoint (no kind or weights)")
    if kinds and ckpt["kind"] not in kinds:
        raise CheckpointError(f"{path}: a {ckpt['kind']} checkpoint, expected one of {kinds}")
    return ckpt


def float_state_dict(state_dict: dict) -> dict:
    """fp16-stored weights back to float32 for CPU inference."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def lineage(ckpt: dict) -> dict:
    """What a model fine-tuned or warm-started from `ckpt` records as `initialised_from`: that
    checkpoint's provenance, progress and metrics, and its own `initialised_from`, so the whole
    chain of runs back to the first stays on file."""
    record = {k: ckpt.get(k) for k in ("provenance", "progress", "metrics")}
    if ckpt.get("initialised_from"):
        record["initialised_from"] = ckpt["initialised_from"]
    return record
