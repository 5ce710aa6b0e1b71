"""``mistudy reproduce``: the paper's Figures 1, 3-6 with our numbers, over several seeds.

The runs are trained (or continued) by :mod:`trainables.reproduce`; here each figure is computed
from their records -- ``get_fig<N>_info(...)`` -> :class:`FigureInfo`, the numbers and the
verdict on the paper's claim, testable without a plot -- then drawn (:func:`plot_figure`: mean ±
min-max band over seeds). Nothing here trains or imports torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trainables.records import DEFAULT_LAST_K
from trainables.reproduce import ALIGNMENT_FILE

from ._rank import bootstrap_ci

__all__ = ["draw_reproduction", "FigureResult", "FigureInfo", "CLAIMS", "NEEDS", "FIGURES",
           "get_figure_info", "plot_figure"]

CLAIMS = {
    1: "Kernel width by alignment: per epoch the alignment curve has a maximum; s* is the mean "
       "of the maxima over the horizon, and drifts as the network learns.",
    3: "Minimizing CE alone, I(Y;Ŷ) rises with the epochs, and I(Y;X) stays above it (DPI).",
    4: "With L = f·CE − (1−f)·I(Y;Ŷ), f = (1+epoch)^-0.5, I(Y;Ŷ) rises and CE falls.",
    5: "CE alone leaves a persistent train–test loss gap; the regularized loss narrows it.",
    6: "‖∇I(Y;Ŷ)‖₂ is ~0 at epoch 0, shows a bump, then vanishes as I(Y;Ŷ) saturates "
       "(shallow CNN); it decays slowly for ResNet18.",
}
NEEDS = {1: ("reg",), 3: ("ce",), 4: ("reg",), 5: ("ce", "reg"), 6: ("reg",)}
FIGURES = tuple(NEEDS)

Runs = list[list[dict[str, Any]]]  # per seed, per epoch: the records


class FigureInfo(NamedTuple):
    """One figure computed: its verdict, its numbers, and the series it draws (name ->
    (seeds, epochs) array; Fig. 1: the per-epoch alignment curves)."""
    figure: int
    verdict: str
    numbers: dict[str, Any]
    series: dict[str, Any]


class FigureResult(NamedTuple):
    figure: int
    png: Path
    verdict: str
    numbers: dict[str, Any]


def _stack(runs: Runs, key: str) -> np.ndarray:
    n = min(len(r) for r in runs)
    return np.array([[r[e][key] for e in range(n)] for r in runs])  # (seeds, epochs)


# ---- computing -----------------------------------------------------------------------------
def get_fig3_info(ce: Runs) -> FigureInfo:
    mi, mx = _stack(ce, "mi_y_yhat"), _stack(ce, "mi_y_x")
    viol = int((_stack(ce, "dpi_margin") < 0).sum())
    rise = float(mi[:, -1].mean() - mi[:, 0].mean())
    ok = rise > 0 and viol == 0
    verdict = (f"{'Supported' if ok else 'Partly supported' if rise > 0 else 'Not supported'}: "
               f"I(Y;Ŷ) rises by {rise:.3f} bits from epoch 0 to {mi.shape[1] - 1} (mean of "
               f"{len(ce)} seeds); DPI violated in {viol} of {mi.size} seed-epochs.")
    return FigureInfo(3, verdict, {"mi_rise_bits": rise, "dpi_violations": viol,
                                   "seed_epochs": int(mi.size)}, {"mi": mi, "mx": mx})


def get_fig4_info(reg: Runs) -> FigureInfo:
    mi, ce = _stack(reg, "mi_y_yhat"), _stack(reg, "train_ce")
    d_mi = float(mi[:, -1].mean() - mi[:, 0].mean())
    d_ce = float(ce[:, -1].mean() - ce[:, 0].mean())
    ok = d_mi > 0 and d_ce < 0
    verdict = (f"{'Supported' if ok else 'Not supported'}: I(Y;Ŷ) changes by {d_mi:+.3f} bits "
               f"and train CE by {d_ce:+.3f} nats from the first to the last epoch.")
    return FigureInfo(4, verdict, {"mi_change_bits": d_mi, "train_ce_change": d_ce},
                      {"mi": mi, "ce": ce})


def get_fig5_info(ce: Runs, reg: Runs, last_k: int = DEFAULT_LAST_K) -> FigureInfo:
    g_ce = _stack(ce, "gap")[:, -last_k:].mean(1)
    g_reg = _stack(reg, "gap")[:, -last_k:].mean(1)
    ci_ce, ci_reg = bootstrap_ci(list(g_ce)), bootstrap_ci(list(g_reg))
    narrower = g_reg.mean() < g_ce.mean()
    separated = not math.isnan(ci_reg[1]) and ci_reg[1] < ci_ce[0]
    word = "Supported" if narrower and separated else (
        "Weakly supported (intervals overlap)" if narrower else "Not supported")
    verdict = (f"{word}: final gap (mean of the last {last_k} epochs) CE {g_ce.mean():.4f} "
               f"[{ci_ce[0]:.4f}, {ci_ce[1]:.4f}] vs regularized {g_reg.mean():.4f} "
               f"[{ci_reg[0]:.4f}, {ci_reg[1]:.4f}] (95% bootstrap over seeds).")
    series = {f"{name}_{key}": _stack(runs, key) for runs, name in ((ce, "ce"), (reg, "reg"))
              for key in ("train_ce", "test_ce")}
    return FigureInfo(5, verdict, {"gap_ce": float(g_ce.mean()), "gap_ce_ci": ci_ce,
                                   "gap_reg": float(g_reg.mean()), "gap_reg_ci": ci_reg}, series)


def get_fig6_info(reg: Runs) -> FigureInfo:
    """Two readings of the paper's Fig. 6, on one axis of epochs trained (0 = initialization):
    the probe ``‖∇θ I(Y;Ŷ)‖₂`` itself, and ``(1 − f(epoch))·‖∇θ I‖``, the size of what the
    regularizer adds to the gradient during that epoch -- zero at epoch 0 by construction."""
    if not all("mi_grad_norm_start" in r[0] for r in reg):
        raise ValueError("these runs predate the probe at initialization; delete their folders "
                         "under runs/ and run again")
    raw = np.concatenate([_stack(reg, "mi_grad_norm_start")[:, :1],
                          _stack(reg, "mi_grad_norm")], axis=1)  # (seeds, epochs + 1)
    weighted = _stack(reg, "mi_grad_norm_weighted")  # (seeds, epochs), x = epoch
    m, w = raw.mean(0), weighted.mean(0)
    peak, wpeak = int(np.argmax(m)), int(np.argmax(w))
    ratio = float(m[-1] / m[peak]) if m[peak] > 0 else float("nan")
    wratio = float(w[-1] / w[wpeak]) if w[wpeak] > 0 else float("nan")
    raw_ok = m[0] < 0.1 * m[peak] and peak > 0 and ratio < 0.3
    w_ok = wpeak > 0 and wratio < 0.3
    shape = ("zero, a bump, then decay: the paper's description" if w_ok
             else "no decay to below 30% of its peak")
    verdict = (
        f"Probe: {'matches' if raw_ok else 'does not match'} the paper's shape -- "
        f"{m[0]:.4f} at initialization, peak {m[peak]:.4f} after {peak} epochs, "
        f"{m[-1]:.4f} at the end ({ratio:.0%} of the peak). Loss-weighted (1 − f)·‖∇I‖: "
        f"0 at epoch 0 by construction, peak {w[wpeak]:.4f} at epoch {wpeak}, "
        f"{w[-1]:.4f} at the end ({wratio:.0%} of its peak): "
        f"{shape}.")
    return FigureInfo(6, verdict, {
        "probe_init": float(m[0]), "probe_peak_epoch": peak, "probe_peak": float(m[peak]),
        "probe_end": float(m[-1]), "weighted_peak_epoch": wpeak,
        "weighted_peak": float(w[wpeak]), "weighted_end": float(w[-1])},
        {"raw": raw, "weighted": weighted})


def get_fig1_info(curves: list[dict[str, Any]]) -> FigureInfo:
    """From the first seed's per-epoch alignment curves (``trainables.reproduce``)."""
    maxima = [float(np.asarray(c["widths"])[int(np.argmax(c["alignment"]))]) for c in curves]
    verdict = (f"Shown: argmax drifts from {maxima[0]:.3f} (epoch 0) to {maxima[-1]:.3f} "
               f"(last epoch); s* = {curves[-1]['sigma_yhat']:.3f} (mean over the horizon).")
    return FigureInfo(1, verdict, {"maxima": maxima, "s_star": curves[-1]["sigma_yhat"]},
                      {"curves": curves})


def get_figure_info(figure: int, runs: dict[str, Runs], folders: dict[str, list[Path]],
                    last_k: int = DEFAULT_LAST_K,
                    curves: list[dict[str, Any]] | None = None) -> FigureInfo:
    """Figure ``figure`` from the records of each condition's runs (and Fig. 1's curves:
    ``curves``, else read from the first regularized run's folder)."""
    if figure == 1:
        if curves is None:
            curves = json.loads((folders["reg"][0] / ALIGNMENT_FILE).read_text())
        return get_fig1_info(curves)
    if figure == 3:
        return get_fig3_info(runs["ce"])
    if figure == 4:
        return get_fig4_info(runs["reg"])
    if figure == 5:
        return get_fig5_info(runs["ce"], runs["reg"], last_k)
    return get_fig6_info(runs["reg"])


# ---- drawing -------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax: Any, m: np.ndarray, color: str, label: str, style: str = "-") -> None:
    ep = np.arange(m.shape[1])
    ax.plot(ep, m.mean(0), style, color=color, label=label)
    if len(m) > 1:
        ax.fill_between(ep, m.min(0), m.max(0), color=color, alpha=0.2)


def _draw_bands(info: FigureInfo, ax: Any, title: str, plt: Any) -> None:
    s = info.series
    if info.figure == 3:
        _band(ax, s["mx"], "grey", "I(Y;X)")
        _band(ax, s["mi"], "C0", "I(Y;Ŷ), CE only")
        ax.set(xlabel="epoch", ylabel="bits", title=f"Fig. 3 — {title}")
        ax.legend()
    elif info.figure == 4:
        _band(ax, s["mi"], "C0", "I(Y;Ŷ) (bits)")
        _band(ax.twinx(), s["ce"], "C3", "train CE", "--")
        ax.set(xlabel="epoch", title=f"Fig. 4 — {title}, f=(1+epoch)^-0.5")
        ax.legend(loc="center right")
    elif info.figure == 5:
        for cond, color, name in (("ce", "black", "CE"), ("reg", "C0", "regularized")):
            _band(ax, s[f"{cond}_train_ce"], color, f"{name} train", "--")
            _band(ax, s[f"{cond}_test_ce"], color, f"{name} test")
        ax.set(xlabel="epoch", ylabel="cross-entropy", title=f"Fig. 5 — {title}")
        ax.legend(fontsize=8)
    elif info.figure == 6:
        _band(ax, s["raw"], "C2", "‖∇θ I(Y;Ŷ)‖₂ (probe)")
        _band(ax, s["weighted"], "C1", "(1 − f)·‖∇θ I(Y;Ŷ)‖₂ (in the loss)", "--")
        ax.set(xlabel="epochs trained (0 = initialization)", title=f"Fig. 6 — {title}")
        ax.legend()
    else:
        _draw_curves(info, ax, title, plt)


def _draw_curves(info: FigureInfo, ax: Any, title: str, plt: Any) -> None:
    curves, maxima = info.series["curves"], info.numbers["maxima"]
    cmap = plt.get_cmap("viridis")
    for e, c in enumerate(curves):
        ax.plot(c["widths"], c["alignment"], color=cmap(e / max(1, len(curves) - 1)),
                linewidth=0.8)
    ax.scatter(maxima, [max(c["alignment"]) for c in curves], color="red", s=8,
               label="per-epoch maximum")
    ax.axvline(info.numbers["s_star"], color="black", linestyle="--", label="s*")
    ax.set(xlabel="kernel width σ", ylabel="alignment with the label matrix",
           title=f"Fig. 1 — {title} (seed 0; colour: epoch)")
    ax.legend()


def plot_figure(info: FigureInfo, title: str, path: Path) -> Path:
    """Draw ``info`` into ``path`` (PNG)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    _draw_bands(info, ax, title, plt)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---- the command ---------------------------------------------------------------------------
def _title(dataset: str, model: str, size: int, seeds: int) -> str:
    reduced = f" — reduced input {size}×{size}" if model == "resnet18" and size != 224 else ""
    return f"{model}{reduced}, {dataset}, {seeds} seeds"


def draw_reproduction(figures: list[int], runs: dict[str, Runs],
                      folders: dict[str, list[Path]], out: Path, dataset: str, model: str,
                      size: int) -> list[FigureResult]:
    """Compute and draw each of ``figures`` from the runs' records (condition -> per seed):
    ``fig<N>-<dataset>-<model>.png`` with its verdict (``.txt``) and numbers (``.json``)."""
    seeds = len(next(iter(runs.values())))
    title = _title(dataset, model, size, seeds)
    results = []
    for f in figures:
        info = get_figure_info(f, runs, folders)
        stem = f"fig{f}-{dataset}-{model}{f'-{size}px' if model == 'resnet18' else ''}"
        png = plot_figure(info, title, out / f"{stem}.png")
        text = f"Claim (paper): {CLAIMS[f]}\nOur run: {info.verdict}\n"
        (out / f"{stem}.txt").write_text(text, encoding="utf-8")
        (out / f"{stem}.json").write_text(json.dumps(info.numbers, indent=2), encoding="utf-8")
        results.append(FigureResult(f, png, info.verdict, info.numbers))
    return results
