"""Attention plots as PNG, drawn on matplotlib's Agg canvas (no display, no global backend)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor


def save_attention_plot(path: str | Path, weights: Tensor, title: str = "") -> Path:
    """One panel per layer and head: weights (L, H, T, S), decoder steps across, inputs up."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    L, H = weights.shape[:2]
    fig = Figure(figsize=(2.8 * H, 2.2 * L), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(L, H, squeeze=False)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer][head]
            ax.imshow(weights[layer, head].T.float().cpu().numpy(), aspect="auto", origin="lower",
                      interpolation="none", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer} head {head}", fontsize=8)
            ax.tick_params(labelsize=6)
            if layer == L - 1:
                ax.set_xlabel("decoder step", fontsize=7)
            if head == 0:
                ax.set_ylabel("input token", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
