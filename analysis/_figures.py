"""Figures: compute (``_get_*_info`` -> NamedTuple, tested) apart from drawing (``plot_*``).

* trajectories of ``I(Y;Ŷ)``, ``I(Y;X)``, CE and gap for the top schedules against the
  baseline (the paper's Fig. 3-5 shapes), mean over seeds with a min-max band;
* the transition functions ``f(epoch)`` themselves;
* ``‖∇I(Y;Ŷ)‖₂`` per epoch (Fig. 6);
* closure vs Δ test accuracy with the Pareto front.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from trainables.schedules import transition

__all__ = ["CurveSet", "TrajectoryInfo", "ParetoInfo", "TransitionInfo", "get_trajectory_info",
           "get_pareto_info", "get_transition_info", "plot_trajectories", "plot_pareto",
           "plot_transitions", "plot_grad_norm", "FamilyInfo", "get_family_info", "plot_family",
           "ConfirmPlotInfo", "get_confirm_plot_info", "plot_confirm"]

TRAJECTORY_KEYS = ("mi_y_yhat", "mi_y_x", "train_ce", "test_ce", "gap", "mi_grad_norm")


class CurveSet(NamedTuple):
    label: str
    epochs: np.ndarray  # (E,)
    mean: dict[str, np.ndarray]  # key -> (E,) mean over seeds
    low: dict[str, np.ndarray]  # key -> (E,) min over seeds
    high: dict[str, np.ndarray]  # key -> (E,) max over seeds
    n_seeds: int


class TrajectoryInfo(NamedTuple):
    curves: list[CurveSet]  # the baseline first (when there is one), then the top schedules


class ParetoInfo(NamedTuple):
    labels: list[str]
    closure: np.ndarray
    delta_acc: np.ndarray
    front: np.ndarray  # bool
    flagged: np.ndarray  # bool: breaks the study's guards (infeasible)


class TransitionInfo(NamedTuple):
    epochs: np.ndarray
    curves: dict[str, np.ndarray]  # schedule label -> f(epoch)


def _curves(label: str, history: pd.DataFrame, run_ids: list[str]) -> CurveSet | None:
    h = history[history.run_id.isin(run_ids)]
    if h.empty:
        return None
    g = h.groupby("epoch")
    return CurveSet(label, np.asarray(sorted(h.epoch.unique())),
                    {k: g[k].mean().to_numpy() for k in TRAJECTORY_KEYS},
                    {k: g[k].min().to_numpy() for k in TRAJECTORY_KEYS},
                    {k: g[k].max().to_numpy() for k in TRAJECTORY_KEYS},
                    h.run_id.nunique())


def get_trajectory_info(ranking: pd.DataFrame, trials: pd.DataFrame, history: pd.DataFrame,
                        top: int = 3) -> TrajectoryInfo:
    curves = []
    best = ranking.head(top)
    if not best.empty:
        first = trials[trials.run_id == best.run_ids.iloc[0][0]]
        base = trials[trials.baseline]
        if not first.empty:
            for k in ("p.dataset", "p.model", "p.batch_size", "p.epochs"):
                base = base[base[k] == first[k].iloc[0]]
        c = _curves("cross-entropy baseline", history, list(base.run_id))
        if c is not None:
            curves.append(c)
    for row in best.to_dict("records"):
        c = _curves(row["schedule"], history, row["run_ids"])
        if c is not None:
            curves.append(c)
    return TrajectoryInfo(curves)


def get_pareto_info(ranking: pd.DataFrame) -> ParetoInfo:
    return ParetoInfo(list(ranking.schedule), ranking.val_closure.to_numpy(float),
                      ranking.delta_val_acc.to_numpy(float), ranking.pareto.to_numpy(bool),
                      ~ranking.feasible.to_numpy(bool))


def get_transition_info(ranking: pd.DataFrame, trials: pd.DataFrame, top: int = 5,
                        epochs: int | None = None) -> TransitionInfo:
    out: dict[str, np.ndarray] = {}
    if epochs is None:
        epochs = int(trials["p.epochs"].iloc[0]) if not trials.empty else 10
    ep = np.arange(epochs)
    for row in ranking.head(top).to_dict("records"):
        t = trials[trials.run_id == row["run_ids"][0]].iloc[0]
        spec = t["config"]["transition"]  # typed by records.typed_config: no guessing
        out[row["schedule"]] = np.array([transition(spec, int(e)) for e in ep])
    return TransitionInfo(ep, out)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _band(ax: Any, c: CurveSet, key: str, color: Any, style: str = "-",
          label: str | None = None) -> None:
    ax.plot(c.epochs, c.mean[key], style, color=color, label=label)
    if c.n_seeds > 1:
        ax.fill_between(c.epochs, c.low[key], c.high[key], color=color, alpha=0.15)


def plot_trajectories(info: TrajectoryInfo, path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, c in enumerate(info.curves):
        color = "black" if c.label.startswith("cross-entropy") else f"C{i}"
        _band(axes[0], c, "mi_y_yhat", color, label=c.label)
        if i == 0:
            _band(axes[0], c, "mi_y_x", "grey", ":", label="I(Y;X)")
        _band(axes[1], c, "train_ce", color, "--")
        _band(axes[1], c, "test_ce", color, label=c.label)
        _band(axes[2], c, "gap", color, label=c.label)
    axes[0].set_title("I(Y;Ŷ) (bits); I(Y;X) dotted")
    axes[1].set_title("CE: test (solid), train (dashed)")
    axes[2].set_title("gap = test CE − train CE")
    axes[2].axhline(0, color="black", linewidth=0.5)
    for a in axes:
        a.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    return _save(plt, fig, path)


def plot_grad_norm(info: TrajectoryInfo, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, c in enumerate(info.curves):
        color = "black" if c.label.startswith("cross-entropy") else f"C{i}"
        _band(ax, c, "mi_grad_norm", color, label=c.label)
    ax.set_title("‖∇θ I(Y;Ŷ)‖₂ per epoch (paper's Fig. 6)")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_transitions(info: TransitionInfo, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, f in info.curves.items():
        ax.plot(info.epochs, f, label=label)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("epoch")
    ax.set_title("transition f(epoch): CE weight")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_pareto(info: ParetoInfo, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ok = ~info.flagged
    ax.scatter(info.closure[ok], info.delta_acc[ok], color="C0", label="schedules")
    ax.scatter(info.closure[~ok], info.delta_acc[~ok], color="C3", marker="x",
               label="infeasible (guard broken)")
    order = np.argsort(info.closure[info.front])
    ax.plot(info.closure[info.front][order], info.delta_acc[info.front][order], "k--o",
            markerfacecolor="none", markersize=11, label="Pareto front")
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("validation gap closure vs matched CE baseline")
    ax.set_ylabel("Δ validation accuracy vs baseline")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


class FamilyInfo(NamedTuple):
    metric: str  # closure | gap_reduction
    families: list[str]
    val: dict[str, np.ndarray]  # family -> per-schedule validation values
    test: dict[str, np.ndarray]  # family -> per-schedule test values (the held-out reading)
    feasible: dict[str, np.ndarray]  # family -> bool per schedule


def get_family_info(ranking: pd.DataFrame, metric: str = "closure") -> FamilyInfo:
    """Per transition family, its schedules' validation and test ``metric`` (NaN dropped)."""
    ok = ranking[ranking[f"val_{metric}"].notna()]
    fams = sorted(ok.family.unique(), key=lambda f: -ok[ok.family == f][f"val_{metric}"].max())
    g = {f: ok[ok.family == f] for f in fams}
    return FamilyInfo(metric, list(fams),
                      {f: g[f][f"val_{metric}"].to_numpy(float) for f in fams},
                      {f: g[f][f"test_{metric}"].to_numpy(float) for f in fams},
                      {f: g[f].feasible.to_numpy(bool) for f in fams})


def plot_family(info: FamilyInfo, path: Path) -> Path:
    """Box and strip per family: validation (what selected) and test (held out) side by side;
    crosses break the guards."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rng = np.random.default_rng(0)
    for i, f in enumerate(info.families):
        for dx, vals, color, name in ((-0.18, info.val[f], "C0", "validation"),
                                      (0.18, info.test[f], "C1", "test")):
            if len(vals):
                ax.boxplot([vals], positions=[i + dx], widths=0.3, showfliers=False,
                           medianprops={"color": color})
            x = i + dx + rng.uniform(-0.07, 0.07, size=len(vals))
            feas = info.feasible[f]
            ax.scatter(x[feas], vals[feas], s=14, color=color,
                       label=name if i == 0 else None)
            ax.scatter(x[~feas], vals[~feas], s=18, color=color, marker="x",
                       label=f"{name}, guard broken" if i == 0 else None)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xticks(range(len(info.families)), info.families)
    unit = " (nats)" if info.metric == "gap_reduction" else ""
    ax.set_ylabel(f"{info.metric.replace('_', ' ')}{unit} vs matched CE baseline")
    ax.set_title("per schedule, by transition family")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


class ConfirmPlotInfo(NamedTuple):
    metric: str
    labels: list[str]
    search_val: np.ndarray
    search_test: np.ndarray
    confirmed: np.ndarray
    low: np.ndarray
    high: np.ndarray


def get_confirm_plot_info(table: pd.DataFrame, metric: str = "closure") -> ConfirmPlotInfo:
    """From ``analysis._confirm.ConfirmInfo.table``."""
    def col(name: str) -> np.ndarray:
        return table[name].to_numpy(float)
    return ConfirmPlotInfo(metric, list(table.schedule), col(f"search_val_{metric}"),
                           col(f"search_test_{metric}"), col(f"confirmed_test_{metric}"),
                           col(f"confirmed_{metric}_ci_low"), col(f"confirmed_{metric}_ci_high"))


def plot_confirm(info: ConfirmPlotInfo, path: Path) -> Path:
    """Per confirmed schedule: what the search promised (validation), what its test read, and
    the test value on fresh seeds with its 95% interval."""
    plt = _plt()
    n = len(info.labels)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.55 * max(n, 1)))
    y = np.arange(n)[::-1]
    ax.scatter(info.search_val, y + 0.15, color="C0", label="search: validation (selected)")
    ax.scatter(info.search_test, y, color="C1", marker="s", label="search: test (read)")
    err = np.vstack([info.confirmed - info.low, info.high - info.confirmed])
    ax.errorbar(info.confirmed, y - 0.15, xerr=np.nan_to_num(err), fmt="D", color="C2",
                capsize=3, label="confirmed: test, fresh seeds (95% CI)")
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.set_yticks(y, info.labels, fontsize=7)
    unit = " (nats)" if info.metric == "gap_reduction" else ""
    ax.set_xlabel(f"{info.metric.replace('_', ' ')}{unit} vs matched CE baseline")
    ax.legend(fontsize=7, loc="best")
    return _save(plt, fig, path)
