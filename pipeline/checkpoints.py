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
    "lexicon": "lexicon.txt",  # and its word list (pipeline.data.lexicon)
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


def half_state_dict(state_dict: dict) -> dict:
    """Weights in fp16, as shipped checkpoints store them (half the size)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def lineage(ckpt: dict) -> dict:
    """What a model fine-tuned or warm-started from `ckpt` records as `initialised_from`: that
    checkpoint's provenance, progress, metrics and training data, and its own `initialised_from`
    or, for an average, `averaged_from`, so the whole chain of runs back to the first stays on
    file."""
    record = {k: ckpt.get(k) for k in ("provenance", "progress", "metrics")}
    for key in ("data", "initialised_from", "averaged_from"):
        if ckpt.get(key):
            record[key] = ckpt[key]
    return record


# what must agree for checkpoints' weights to be averaged: the same model, units and features
_AVERAGE_MUST_MATCH = ("kind", "dims", "tokenizer", "vocab", "features", "stats")
# dims fields that size a part a model may have or lack (0: absent) beside the same other
# weights; an average takes such a part from the inputs that have it
_OPTIONAL_PARTS = ("n_r2l_decoder_layers",)
# what an averaged checkpoint does not carry over from its first input
_AVERAGE_DROPS = ("state_dict", "optimizer", "rng", "progress", "train_config", "metrics",
                  "scores", "provenance", "initialised_from")


def average_checkpoints(ckpts: list[dict], weights: list[float] | None = None) -> dict:
    """One checkpoint whose weights are the weighted mean of `ckpts`' (uniform by default): the
    weight-space average ESPnet takes of a run's last snapshots, or of a model and its
    fine-tuned descendants. The inputs must share kind, dims, units and features, except that
    some may lack an optional part (a right-to-left decoder): that part is the mean of those
    that have it. The result carries the metadata of the first input with every part, as `data`
    the distinct training sets of its inputs (a list), and as `averaged_from` each input's weight
    and `lineage` (repeated ancestors written once, see `_share_repeats`); its weights are fp32."""
    if not ckpts:
        raise CheckpointError("nothing to average")
    weights = [1.0] * len(ckpts) if weights is None else list(weights)
    if len(weights) != len(ckpts) or min(weights) < 0 or sum(weights) <= 0:
        raise CheckpointError(f"{len(ckpts)} checkpoints need as many weights >= 0, not {weights}")
    first = max(ckpts, key=lambda c: len(c["state_dict"]))  # the one with every optional part
    for i, ckpt in enumerate(ckpts, 1):
        for key in _AVERAGE_MUST_MATCH:
            if (_comparable(_without_absent_parts(ckpt, key, first))
                    != _comparable(_without_absent_parts(first, key, first))):
                raise CheckpointError(f"checkpoint {i} differs from the others in {key!r}: "
                                      "only models of one architecture, units and features average")
    state = {}
    for name, value in first["state_dict"].items():
        having = [(w, c["state_dict"][name]) for w, c in zip(weights, ckpts)
                  if name in c["state_dict"]]
        total = sum(w for w, _ in having)
        if value.is_floating_point() and total > 0:
            state[name] = sum(w / total * v.float() for w, v in having)
        else:
            state[name] = value
    total = sum(weights)
    averaged = {k: v for k, v in first.items() if k not in _AVERAGE_DROPS}
    averaged["state_dict"] = state
    averaged["data"] = _distinct_data(c.get("data") for c in ckpts)
    records = [{"weight": w / total, **lineage(c)} for w, c in zip(weights, ckpts)]
    averaged["averaged_from"] = _share_repeats(records)
    return averaged


def _without_absent_parts(ckpt: dict, key: str, reference: dict):
    """`ckpt[key]`, with the dims of optional parts it lacks (_OPTIONAL_PARTS) taken from
    `reference`: a model without a part averages with models that have it. A part absent from
    both is left out, whether its field is missing (older checkpoints) or 0."""
    value = ckpt.get(key)
    if key != "dims" or not isinstance(value, dict):
        return value
    reference_dims = reference.get("dims") if isinstance(reference.get("dims"), dict) else {}
    value = {**value, **{f: reference_dims.get(f) for f in _OPTIONAL_PARTS if not value.get(f)}}
    return {f: v for f, v in value.items() if v or f not in _OPTIONAL_PARTS}


def _share_repeats(records: list) -> list:
    """`records` (an `averaged_from` list) with each ancestor chain written once: a chain equal to
    an earlier one, or to an earlier input's own record (its weight and file aside), becomes
    `{"same_as": "averaged_from[0]"}`, a path from the record that holds the list. Each nested
    `averaged_from` is a scope of its own, so a soup's record keeps its meaning inside the next
    soup's. Without this a soup of a model and snapshots of its fine-tunes stores the model's
    history once per snapshot, and the next soup that again per snapshot."""
    seen: list[tuple[object, str]] = []

    def visit(node, where: str):
        if isinstance(node, list):
            return [visit(item, f"{where}[{i}]") for i, item in enumerate(node)]
        if not isinstance(node, dict):
            return node
        out = dict(node)
        if "initialised_from" in node:
            out["initialised_from"] = share("initialised_from", node, where)
        if "averaged_from" in node:
            out["averaged_from"] = share("averaged_from", node, where)
        seen.append(({k: v for k, v in node.items() if k not in ("weight", "file")}, where))
        return out

    def share(key: str, node: dict, where: str):
        value = node[key]
        if _is_reference(value):  # written by an earlier soup
            return value
        target = next((p for earlier, p in seen if earlier == value), None)
        if target is not None:
            return {"same_as": target}
        seen.append((value, f"{where}.{key}"))
        if key == "averaged_from":  # a scope of its own: its paths start from `node`
            return _share_repeats(value)
        return visit(value, f"{where}.{key}")

    return visit(records, "averaged_from")


def _is_reference(value) -> bool:
    return isinstance(value, dict) and set(value) == {"same_as"}


def _distinct_data(entries) -> list:
    """Training-set records, an average's list flattened, each once: snapshots of one run share
    their data, and an average of averages would otherwise nest."""
    out = []
    for entry in entries:
        for item in entry if isinstance(entry, list) else [entry]:
            if item is not None and item not in out:
                out.append(item)
    return out


def _comparable(value):
    """Nested dicts/lists/tensors as plain values, for equality."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    return value
