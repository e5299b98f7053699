"""Inference precision: float32, or bfloat16/float16 autocast where the device runs it fast.

    precision = resolve_precision("auto", device)   # "bf16" on a CUDA GPU that has it, else "fp32"
    with autocast(device, precision):
        memory = model.encode(x)

Autocast runs matrix products in the lower precision and keeps softmax, log-softmax and
normalisation in float32, so scores stay comparable; weights stay float32.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """"auto": bf16 on a CUDA device that supports it, fp16 on an older GPU, fp32 on a CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    device = torch.device(device)
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("fp16 autocast needs a GPU; use bf16 or fp32 on a CPU")
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(device: torch.device, precision: str):
    """A context that runs the model in `precision` ("fp32": no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])
