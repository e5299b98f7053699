"""Test-time adaptation of a model's LayerNorms.

Unsupervised speaker adaptation (pipeline.inference.recognizer): a voice the recogniser never heard
shifts its encoder's activations, and a few Adam steps on the encoder's LayerNorm gains and
biases alone (2 x d_model numbers a norm), trained on the recogniser's own first-pass
transcripts of that voice, move them back: too few numbers to learn much of those
transcripts' errors.
The rest of the model stays frozen, and everything is restored when the block ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@contextmanager
def layer_norms_adapted(model: nn.Module, part: nn.Module, loss: Callable[[], Tensor],
                        steps: int, lr: float) -> Iterator[None]:
    """Within the block, the LayerNorms of `part` (a submodule of `model`) hold the gains and
    biases that `steps` Adam steps on `loss()` (a fresh minibatch's loss on each call) reached;
    no other parameter of `model` moves. On exit the model is as it was, gradients included."""
    norms = [m for m in part.modules() if isinstance(m, nn.LayerNorm)]
    params = [p for m in norms for p in (m.weight, m.bias)]
    saved = [p.detach().clone() for p in params]
    trainable = {p: p.requires_grad for p in model.parameters()}
    for p in trainable:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    try:
        optimizer = torch.optim.Adam(params, lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                loss().backward()
                optimizer.step()
        for p in params:
            p.grad = None
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)
        for p, requires_grad in trainable.items():
            p.requires_grad_(requires_grad)
