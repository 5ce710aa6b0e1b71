"""A trial's trajectories as one PNG (MI, CE, gap, ‖∇I‖ and f per epoch).

Drawn by the trial itself at its last epoch (the Ray trainable, on whichever node ran it), so the
cost scales with the cluster, not with the study's driver; the driver draws it only for a trial
that ended early (stopped, failed) or came from an older version. matplotlib is imported
here only: a torch-only box trains without it (then the driver draws)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_trial"]


def plot_trial(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    ax = axes[0]
    ax.plot(ep, [r["mi_y_x"] for r in history], color="grey", label="I(Y;X)")
    ax.plot(ep, [r["mi_y_yhat"] for r in history], color="C0", label="I(Y;Ŷ)")
    ax.set_title("mutual information (bits)")
    ax.legend()
    ax = axes[1]
    ax.plot(ep, [r["train_ce"] for r in history], label="train CE")
    ax.plot(ep, [r["test_ce"] for r in history], label="test CE")
    ax.plot(ep, [r["val_ce"] for r in history], label="val CE", linestyle=":")
    ax.set_title("cross-entropy")
    ax.legend()
    ax = axes[2]
    ax.plot(ep, [r["gap"] for r in history], color="C3", label="test − train CE")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title("generalization gap")
    ax = axes[3]
    ax.plot(ep, [r["mi_grad_norm"] for r in history], color="C2", label="‖∇I(Y;Ŷ)‖₂")
    twin = ax.twinx()
    twin.plot(ep, [r["transition"] for r in history], color="black", linestyle="--",
              label="f(epoch)")
    twin.set_ylim(0, 1.05)
    ax.set_title("‖∇I(Y;Ŷ)‖₂ and f (dashed)")
    for a in axes:
        a.set_xlabel("epoch")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
