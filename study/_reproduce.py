"""``mistudy reproduce``: the paper's Figures 1, 3-6 with our numbers, over several seeds.

Runs are shared between figures and cached in ``OUT/runs/<condition>-seed<k>/``: Fig. 3 uses
plain-CE runs; Fig. 4 and 6 the regularized ones (``f = (1 + epoch)^-0.5``, α = 1.01); Fig. 5
both; Fig. 1 records the alignment curve of Ŷ after every epoch of the regularized runs. Each
figure is drawn as mean ± min-max band over seeds, next to a short verdict on the paper's claim.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from analysis import bootstrap_ci
from trainables.config import TrainConfig
from trainables.locks import folder_lock
from trainables.records import (
    DEFAULT_ALPHA,
    DEFAULT_LAST_K,
    METRICS_FILE,
    NUM_CLASSES,
    atomic_write_text,
    read_metrics,
    write_metrics,
)

__all__ = ["reproduce", "FigureResult", "CLAIMS"]

CLAIMS = {
    1: "Kernel width by alignment: per epoch the alignment curve has a maximum; s* is the mean "
       "of the maxima over the horizon, and drifts as the network learns.",
    3: "Minimizing CE alone, I(Y;Ŷ) rises with the epochs, and I(Y;X) stays above it (DPI).",
    4: "With L = f·CE − (1−f)·I(Y;Ŷ), f = (1+epoch)^-0.5, I(Y;Ŷ) rises and CE falls.",
    5: "CE alone leaves a persistent train–test loss gap; the regularized loss narrows it.",
    6: "‖∇I(Y;Ŷ)‖₂ is ~0 at epoch 0, shows a bump, then vanishes as I(Y;Ŷ) saturates "
       "(shallow CNN); it decays slowly for ResNet18.",
}
PAPER_EPOCHS = {"shallow": 50, "resnet18": 100}
CONDITIONS = {"ce": {"family": "constant", "c": 1.0},
              "reg": {"family": "power", "exponent": 0.5}}


class FigureResult(NamedTuple):
    figure: int
    png: Path
    verdict: str
    numbers: dict[str, Any]


def _config(dataset: str, model: str, condition: str, seed: int, epochs: int,
            input_size: int, threads: int | None = None) -> TrainConfig:
    return TrainConfig.from_dict({
        "dataset": dataset, "model": model, "epochs": epochs, "seed": seed,
        "alpha": DEFAULT_ALPHA, "transition": CONDITIONS[condition],
        "input_size": input_size if model == "resnet18" else 224,  # shallow ignores it
        "batch_size": 256 if model == "shallow" else 64, "threads": threads})


class _Run:
    """One reproduction run in ``folder``, resumable after every epoch in the one checkpoint
    layout (:mod:`trainables.checkpoint`: ``state.pt``, ``history.json``), plus
    ``alignment.partial.jsonl`` for Fig. 1's curves; the finished run is ``metrics.csv``
    (+ ``alignment.json``), written atomically, and its checkpoint removed."""

    def __init__(self, cfg: TrainConfig, folder: Path, curves: bool) -> None:
        self.cfg, self.folder, self.curves = cfg, folder, curves
        self.done = folder / METRICS_FILE
        self.records: list[dict[str, Any]] = []
        self.align: list[dict[str, Any]] = []
        self.trainer: Any = None
        self.rng: Any = None

    def finished(self) -> bool:
        return self.done.exists() and (not self.curves
                                       or (self.folder / "alignment.json").exists())

    def result(self) -> list[dict[str, Any]]:
        return [dict(r) for r in read_metrics(self.done)]

    def open(self) -> None:
        """Build the trainer; continue from the last saved epoch if there is one."""
        import torch

        from trainables import Trainer
        from trainables.checkpoint import STATE_FILE, load

        self.folder.mkdir(parents=True, exist_ok=True)
        self.trainer = Trainer(self.cfg)
        if (self.folder / STATE_FILE).exists():
            self.records = load(self.folder, self.trainer) or []
            e = self.trainer.epoch
            lines = (self.folder / "alignment.partial.jsonl").read_text().splitlines() \
                if self.curves else []
            self.align = [json.loads(x) for x in lines[:e]]
            if len(self.records) < e or (self.curves and len(self.align) < e):
                raise RuntimeError(f"{self.folder}: its checkpoint is at epoch {e} but fewer "
                                   f"records were saved; delete the folder to restart the run")
        self.rng = torch.get_rng_state()

    def step(self) -> None:
        """Train one epoch, then checkpoint it (records before state: a kill between the two
        re-trains that epoch, it never skips one)."""
        import torch

        from trainables.checkpoint import save

        tr = self.trainer
        torch.set_rng_state(self.rng)  # runs interleaved in one process keep their own RNG
        self.records.append(tr.step())
        if self.curves:
            c = tr.yhat_alignment_curve()
            self.align.append({"widths": c.widths.tolist(), "alignment": c.alignment.tolist(),
                               "sigma_yhat": tr.sigma_yhat})
        self.rng = torch.get_rng_state()
        if self.curves:
            atomic_write_text(self.folder / "alignment.partial.jsonl",
                              "".join(json.dumps(a) + "\n" for a in self.align))
        save(self.folder, tr, self.records)
        if tr.epoch >= self.cfg.epochs:
            self._finish()

    def _finish(self) -> None:
        from trainables.checkpoint import HISTORY_FILE, STATE_FILE

        if self.curves:
            atomic_write_text(self.folder / "alignment.json", json.dumps(self.align))
        write_metrics(self.done, self.records)
        for name in (STATE_FILE, HISTORY_FILE, "alignment.partial.jsonl"):
            (self.folder / name).unlink(missing_ok=True)


def train_runs(runs: list[_Run], log: Any = print) -> None:
    """Train the unfinished runs round-robin, one epoch each in turn: stopped at any time, the
    seeds and conditions have trained about equally many epochs (and resume from there)."""
    todo = [r for r in runs if not r.finished()]
    with ExitStack() as stack:
        for r in todo:
            stack.enter_context(folder_lock(r.folder))
            r.open()
        t0 = time.time()
        while todo:
            for r in list(todo):
                r.step()
                log(f"  {r.folder.name}: epoch {r.trainer.epoch}/{r.cfg.epochs} "
                    f"({time.time() - t0:.0f} s)")
                if r.finished():
                    todo.remove(r)


def _stack(runs: list[list[dict[str, Any]]], key: str) -> np.ndarray:
    n = min(len(r) for r in runs)
    return np.array([[r[e][key] for e in range(n)] for r in runs])  # (seeds, epochs)


def _band(ax: Any, m: np.ndarray, color: str, label: str, style: str = "-") -> None:
    ep = np.arange(m.shape[1])
    ax.plot(ep, m.mean(0), style, color=color, label=label)
    if len(m) > 1:
        ax.fill_between(ep, m.min(0), m.max(0), color=color, alpha=0.2)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fig3(ce: list, out: Path, title: str) -> FigureResult:
    mi, mx = _stack(ce, "mi_y_yhat"), _stack(ce, "mi_y_x")
    viol = int((_stack(ce, "dpi_margin") < 0).sum())
    rise = float(mi[:, -1].mean() - mi[:, 0].mean())
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    _band(ax, mx, "grey", "I(Y;X)")
    _band(ax, mi, "C0", "I(Y;Ŷ), CE only")
    ax.set(xlabel="epoch", ylabel="bits", title=f"Fig. 3 — {title}")
    ax.legend()
    png = _save(fig, out / "fig3.png")
    ok = rise > 0 and viol == 0
    verdict = (f"{'Supported' if ok else 'Partly supported' if rise > 0 else 'Not supported'}: "
               f"I(Y;Ŷ) rises by {rise:.3f} bits from epoch 0 to {mi.shape[1] - 1} (mean of "
               f"{len(ce)} seeds); DPI violated in {viol} of {mi.size} seed-epochs.")
    return FigureResult(3, png, verdict, {"mi_rise_bits": rise, "dpi_violations": viol,
                                          "seed_epochs": int(mi.size)})


def _fig4(reg: list, out: Path, title: str) -> FigureResult:
    mi, ce = _stack(reg, "mi_y_yhat"), _stack(reg, "train_ce")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    _band(ax, mi, "C0", "I(Y;Ŷ) (bits)")
    twin = ax.twinx()
    _band(twin, ce, "C3", "train CE", "--")
    ax.set(xlabel="epoch", title=f"Fig. 4 — {title}, f=(1+epoch)^-0.5")
    ax.legend(loc="center right")
    png = _save(fig, out / "fig4.png")
    d_mi, d_ce = float(mi[:, -1].mean() - mi[:, 0].mean()), float(ce[:, -1].mean()
                                                                    - ce[:, 0].mean())
    ok = d_mi > 0 and d_ce < 0
    verdict = (f"{'Supported' if ok else 'Not supported'}: I(Y;Ŷ) changes by {d_mi:+.3f} bits "
               f"and train CE by {d_ce:+.3f} nats from the first to the last epoch.")
    return FigureResult(4, png, verdict, {"mi_change_bits": d_mi, "train_ce_change": d_ce})


def _fig5(ce: list, reg: list, out: Path, title: str, last_k: int = DEFAULT_LAST_K
          ) -> FigureResult:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for runs, color, name in ((ce, "black", "CE"), (reg, "C0", "regularized")):
        _band(ax, _stack(runs, "train_ce"), color, f"{name} train", "--")
        _band(ax, _stack(runs, "test_ce"), color, f"{name} test")
    ax.set(xlabel="epoch", ylabel="cross-entropy", title=f"Fig. 5 — {title}")
    ax.legend(fontsize=8)
    png = _save(fig, out / "fig5.png")
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
    return FigureResult(5, png, verdict, {"gap_ce": float(g_ce.mean()),
                                          "gap_ce_ci": ci_ce, "gap_reg": float(g_reg.mean()),
                                          "gap_reg_ci": ci_reg})


def _fig6(reg: list, out: Path, title: str) -> FigureResult:
    """Two readings of the paper's Fig. 6, on one axis of epochs trained (0 = initialization):
    the probe ``‖∇θ I(Y;Ŷ)‖₂`` itself, and ``(1 − f(epoch))·‖∇θ I‖``, the size of what the
    regularizer adds to the gradient during that epoch -- zero at epoch 0 by construction."""
    if not all("mi_grad_norm_start" in r[0] for r in reg):
        raise ValueError("these runs predate the probe at initialization; delete their folders "
                         "under runs/ and run again")
    raw = np.concatenate([_stack(reg, "mi_grad_norm_start")[:, :1],
                          _stack(reg, "mi_grad_norm")], axis=1)  # (seeds, epochs + 1)
    weighted = _stack(reg, "mi_grad_norm_weighted")  # (seeds, epochs), x = epoch
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    _band(ax, raw, "C2", "‖∇θ I(Y;Ŷ)‖₂ (probe)")
    _band(ax, weighted, "C1", "(1 − f)·‖∇θ I(Y;Ŷ)‖₂ (in the loss)", "--")
    ax.set(xlabel="epochs trained (0 = initialization)", title=f"Fig. 6 — {title}")
    ax.legend()
    png = _save(fig, out / "fig6.png")
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
    return FigureResult(6, png, verdict, {
        "probe_init": float(m[0]), "probe_peak_epoch": peak, "probe_peak": float(m[peak]),
        "probe_end": float(m[-1]), "weighted_peak_epoch": wpeak,
        "weighted_peak": float(w[wpeak]), "weighted_end": float(w[-1])})


def _fig1(folders: list[Path], out: Path, title: str) -> FigureResult:
    curves = json.loads((folders[0] / "alignment.json").read_text())
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    maxima = []
    for e, c in enumerate(curves):
        w, a = np.array(c["widths"]), np.array(c["alignment"])
        ax.plot(w, a, color=cmap(e / max(1, len(curves) - 1)), linewidth=0.8)
        maxima.append(float(w[int(np.argmax(a))]))
    ax.scatter(maxima, [max(c["alignment"]) for c in curves], color="red", s=8,
               label="per-epoch maximum")
    ax.axvline(curves[-1]["sigma_yhat"], color="black", linestyle="--", label="s*")
    ax.set(xlabel="kernel width σ", ylabel="alignment with the label matrix",
           title=f"Fig. 1 — {title} (seed 0; colour: epoch)")
    ax.legend()
    png = _save(fig, out / "fig1.png")
    verdict = (f"Shown: argmax drifts from {maxima[0]:.3f} (epoch 0) to {maxima[-1]:.3f} "
               f"(last epoch); s* = {curves[-1]['sigma_yhat']:.3f} (mean over the horizon).")
    return FigureResult(1, png, verdict, {"maxima": maxima, "s_star": curves[-1]["sigma_yhat"]})


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


NEEDS = {1: ("reg",), 3: ("ce",), 4: ("reg",), 5: ("ce", "reg"), 6: ("reg",)}
FIGURES = tuple(NEEDS)


def _title(dataset: str, model: str, size: int, seeds: int) -> str:
    reduced = f" — reduced input {size}×{size}" if model == "resnet18" and size != 224 else ""
    return f"{model}{reduced}, {dataset}, {seeds} seeds"


def plan_runs(dataset: str, model: str, seeds: int, epochs: int, out: Path, size: int,
              conditions: tuple[str, ...], threads: int | None = None) -> dict[str, list[_Run]]:
    """The runs each condition needs, in ``OUT/runs/<dataset>-<model>-<size>-<cond>-e<E>-seed<k>``
    (the folder name is the cache key; the thread count is not part of it)."""
    return {cond: [_Run(_config(dataset, model, cond, s, epochs, size, threads),
                        out / "runs" / f"{dataset}-{model}-{size}-{cond}-e{epochs}-seed{s}",
                        curves=(cond == "reg"))
                   for s in range(seeds)] for cond in conditions}


def reproduce(figures: int | list[int], dataset: str, model: str, seeds: int,
              epochs: int | None, out: Path, input_size: int | None = None, log: Any = print,
              threads: int | None = None) -> list[FigureResult]:
    """Train (or continue) the runs ``figures`` need, round-robin, then draw each figure."""
    figs = [figures] if isinstance(figures, int) else list(figures)
    epochs = epochs or PAPER_EPOCHS[model]
    size = input_size or (224 if model == "resnet18" else 28)
    out.mkdir(parents=True, exist_ok=True)
    conds = tuple(c for c in ("ce", "reg") if any(c in NEEDS[f] for f in figs))
    plan = plan_runs(dataset, model, seeds, epochs, out, size, conds, threads)
    train_runs([r for rs in plan.values() for r in rs], log)
    runs = {c: [r.result() for r in rs] for c, rs in plan.items()}
    folders = {c: [r.folder for r in rs] for c, rs in plan.items()}
    title = _title(dataset, model, size, seeds)
    return [_draw(f, runs, folders, out, title, dataset, model, size) for f in figs]


def _draw(figure: int, runs: dict[str, list], folders: dict[str, list[Path]], out: Path,
          title: str, dataset: str, model: str, size: int) -> FigureResult:
    res = {1: lambda: _fig1(folders["reg"], out, title), 3: lambda: _fig3(runs["ce"], out, title),
           4: lambda: _fig4(runs["reg"], out, title),
           5: lambda: _fig5(runs["ce"], runs["reg"], out, title),
           6: lambda: _fig6(runs["reg"], out, title)}[figure]()
    stem = f"fig{figure}-{dataset}-{model}{f'-{size}px' if model == 'resnet18' else ''}"
    png = res.png.rename(out / f"{stem}.png")
    text = f"Claim (paper): {CLAIMS[figure]}\nOur run: {res.verdict}\n"
    (out / f"{stem}.txt").write_text(text, encoding="utf-8")
    (out / f"{stem}.json").write_text(json.dumps(res.numbers, indent=2), encoding="utf-8")
    return res._replace(png=png)


def cpu_estimate_seconds(model: str, input_size: int, epochs: int, seeds: int,
                         conditions: int, train_size: int = 5000, batch: int = 64) -> float:
    """Rough wall time from one timed training step (forward + backward) on this machine."""
    import torch

    from trainables.models import build_model

    net = build_model(model, NUM_CLASSES, input_size)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, NUM_CLASSES, (batch,))
    t0 = time.perf_counter()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    step = time.perf_counter() - t0
    return step * (train_size / batch) * 1.5 * epochs * seeds * conditions  # 1.5: evaluation
