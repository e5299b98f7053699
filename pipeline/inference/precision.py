"""Inference precision: float32, or bfloat16/float16 autocast.

    precision = resolve_precision("bf16", device)
    with autocast(device, precision):
        memory = model.encode(x)

Autocast runs matrix products in the lower precision and keeps softmax, log-softmax and
normalisation in float32, so scores stay comparable; weights stay float32. The default is
float32 on every device: for the shipped models (d_model 192-256, a few million parameters) on
an NVIDIA H200, bf16 autocast made NAT text-to-mel 1.9x, AR 1.7x and ASR 1.1x slower, since
the casts cost more than the small matrix products save (bench/precision.py, docs/BENCHMARKS.md).
A larger model is where bf16 pays.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """`precision` checked against what `device` can run."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp16" and torch.device(device).type == "cpu":
        raise ValueError("fp16 autocast needs a GPU; use bf16 or fp32 on a CPU")
    return precision


def autocast(device: torch.device, precision: str):
    """A context that runs the model in `precision` ("fp32": no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])
