"""The tables and figures of docs/findings.md, regenerated from study bundles.

``mistudy findings BUNDLE... --out docs/findings [--update docs/findings.md]`` writes, per
bundle, ``<name>-tables.md`` and three figures (Pareto, closure by family, search vs
confirmation), and with ``--update`` replaces each ``<!-- tables:<name> -->`` ... ``<!-- end
tables:<name> -->`` block of the findings page with the fresh tables -- so every number there
comes from the committed bundles by one command (``tests/analysis/test_findings.py`` checks it).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from trainables.studyfolder import NAME_RULE, is_study_name

from ._commands import Analysis, analyze, confirmation
from ._confirm import fresh_text, spearman
from ._edges import format_edges
from ._errors import AnalysisError
from ._table import confirm_cells, ranking_cells, render_markdown

__all__ = ["FindingsInfo", "get_findings_info", "format_findings", "write_findings",
           "update_page"]

TOP = 10  # ranking rows shown (plus the enqueued paper schedules wherever they rank)


class FindingsInfo(NamedTuple):
    name: str
    meta: dict[str, Any]
    spec: dict[str, Any]
    analysis: Analysis
    confirmed: Any  # ConfirmInfo | None
    importance: list[Any]  # ImportanceInfo per target
    baseline_shift: dict[str, float]  # test_ce − val_ce on the CE baselines
    transfer: dict[str, float]  # Spearman(val, test) across searched schedules
    wall: dict[str, float]  # phase -> hours of training (sum of epoch seconds)


def _hours(a: Analysis) -> float:
    h = a.data.history
    ids = set(a.data.runs.run_id)
    return float(h[h.run_id.isin(ids)].epoch_seconds.sum()) / 3600.0


def _baseline_shift(a: Analysis) -> dict[str, float]:
    """Validation and test are exchangeable when test_ce − val_ce on the CE baselines is ~0
    (window means, one value per baseline run)."""
    base = a.trials[a.trials.baseline]
    h = a.data.history
    diffs = []
    for row in base.to_dict("records"):
        w = h[(h.run_id == row["run_id"]) & h.epoch.isin(row["window"])]
        diffs.append(float((w.test_ce - w.val_ce).mean()))
    d = np.asarray(diffs)
    from ._rank import bootstrap_ci

    lo, hi = bootstrap_ci(d)
    return {"mean": float(d.mean()) if len(d) else math.nan,
            "sd": float(d.std(ddof=1)) if len(d) > 1 else math.nan,
            "ci_low": lo, "ci_high": hi, "n": float(len(d))}


def get_findings_info(bundle: str) -> FindingsInfo:
    from trainables.yamlio import safe_load

    from ._bundle import read_bundle
    from ._importance import get_importance_info

    b = read_bundle(bundle)
    name = b.meta.get("name")
    if not is_study_name(name):  # it names files in --out: a name, never a path
        raise AnalysisError(f"{bundle}: its study name {str(name)[:60]!r} is no study name -- "
                            f"allowed: {NAME_RULE}")
    a = analyze(bundle, phase="search")
    conf = confirmation(bundle, a)
    select = a.selection.metric
    imp = [get_importance_info(b.optuna, t) for t in dict.fromkeys([select, "val_closure"])]
    r = a.ranking
    transfer = {m: spearman(r[f"val_{m}"], r[f"test_{m}"]) for m in ("closure",
                                                                      "gap_reduction")}
    wall = {"search": _hours(a)}
    if conf is not None:
        wall["confirm"] = _hours(analyze(bundle, phase="confirm"))
    return FindingsInfo(str(b.meta.get("name")), b.meta, safe_load(b.spec_text, "spec") or {},
                        a, conf, imp, _baseline_shift(a), transfer, wall)


def _f(v: Any, digits: int = 4) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "n/a" if not math.isfinite(float(v)) else f"{float(v):+.{digits}f}"
    return str(v)


def _table(df: pd.DataFrame, cols: dict[str, str], digits: int = 3) -> str:
    head = "| " + " | ".join(cols.values()) + " |"
    sep = "|" + "---|" * len(cols)
    body = ["| " + " | ".join(_f(row[c], digits) for c in cols) + " |"
            for row in df.to_dict("records")]
    return "\n".join([head, sep, *body])


def _ranking_md(info: FindingsInfo) -> str:
    """The ranking's top rows and the enqueued paper schedules, with the columns, units and
    rounding of ``mistudy rank`` and the HTML report (``analysis._table``)."""
    r = info.analysis.ranking.copy()
    r.insert(0, "rank", range(1, len(r) + 1))
    shown = r[(r["rank"] <= TOP) | r.enqueued]
    cells = ranking_cells(shown, info.analysis.selection.metric, sep=", ")
    n_feas = int(r.feasible.sum())
    return (f"{len(r)} schedules ({n_feas} meet both guards); top {TOP} by "
            f"{info.analysis.selection.metric} on validation, plus the paper's schedule "
            f"(enqueued, *) wherever it ranks:\n\n" + render_markdown(cells)
            + "\n\n" + cells.page_note)


def _importance_md(info: FindingsInfo) -> str:
    parts = []
    for imp in info.importance:
        t = imp.table
        if t.empty:
            parts.append(f"Importance for {imp.target}: too few configurations.")
            continue
        cols = {"scope": "scope", "param": "parameter", "n_trials": "configurations",
                "fanova": "fANOVA", "ped_anova": "PED-ANOVA"}
        body = _table(t, cols).replace("+", "")
        parts.append(f"Importance for {imp.target}:\n\n{body}")
    return "\n\n".join(parts)


def _confirm_md(info: FindingsInfo) -> str:
    c = info.confirmed
    if c is None:
        return "No confirmation in this bundle."
    rho = ", ".join(f"{k} {_f(v, 2)}" for k, v in c.spearman.items())
    return (f"{fresh_text(c)[0].upper()}{fresh_text(c)[1:]}; matched CE baselines on the "
            f"same seeds and draws.\n\n"
            + render_markdown(confirm_cells(c, sep=", "), [str(v) for v in c.table.verdict])
            + f"\n\nSpearman (in-search validation vs confirmed test): {rho}.")


def format_findings(info: FindingsInfo) -> str:
    """The generated part of the findings page for one study (markdown)."""
    s, sh, a = info.spec, info.baseline_shift, info.analysis
    fx = s.get("fixed", {})
    paper = a.ranking.reset_index(drop=True)
    ranks = [f"{i + 1} ({row.schedule})" for i, row in paper.iterrows() if row.enqueued]
    wall = ", ".join(f"{k} {v:.2f} h" for k, v in info.wall.items())
    lines = [
        f"**Spec** `{info.name}`: {fx.get('dataset')}, {fx.get('model')}, "
        f"{fx.get('epochs')} epochs, {s.get('trials')} configurations × seeds "
        f"{s.get('seeds')}, families {sorted((s.get('search') or {}).get('families', {}))}, "
        f"α {(s.get('search') or {}).get('alpha')}, batch sizes "
        f"{(s.get('search') or {}).get('batch_size')}; objective {s.get('objective')}.",
        f"**Training time** (sum of epoch times, one torch thread per trial): {wall}. "
        f"**Machine**: {info.meta.get('machine')}.",
        f"**Baselines, validation vs test**: test_ce − val_ce = {_f(sh['mean'])} ± "
        f"{sh['sd']:.3f} nats (mean ± sd over {int(sh['n'])} CE baseline runs; 95% CI "
        f"{_f(sh['ci_low'])}..{_f(sh['ci_high'])}). All of them share one split draw "
        f"(data_seed {fx.get('data_seed', 0)}): this is that draw's offset, not a test of "
        f"exchangeability (see *Validation and test, over split draws*).",
        f"**Transfer across the searched schedules** (Spearman, validation vs test, in "
        f"search): closure {_f(info.transfer['closure'], 2)}, gap reduction "
        f"{_f(info.transfer['gap_reduction'], 2)}.",
        f"**The paper's schedule** (power p = 0.5, α = 1.01) ranks: {', '.join(ranks) or 'n/a'}"
        f" of {len(paper)}.",
        *(f"**Range edge**: {line}." for line in format_edges(a.edges)),
        "", "#### Ranking (selected on validation; test only read)", "", _ranking_md(info),
        "", "#### Importance", "", _importance_md(info),
        "", "#### Confirmation on fresh seeds", "", _confirm_md(info),
    ]
    return "\n".join(lines)


def write_findings(bundles: list[str], out: Path) -> dict[str, str]:
    """Per bundle: ``<name>-tables.md`` and the figures in ``out``; returns name -> tables."""
    from . import _figures as fig

    out.mkdir(parents=True, exist_ok=True)
    texts = {}
    for bundle in bundles:
        info = get_findings_info(bundle)
        text = format_findings(info)
        (out / f"{info.name}-tables.md").write_text(text + "\n", encoding="utf-8")
        r = info.analysis.ranking
        m = info.analysis.selection.metric.removeprefix("val_")
        fig.plot_pareto(fig.get_pareto_info(r), out / f"{info.name}-pareto.png")
        fig.plot_family(fig.get_family_info(r, m), out / f"{info.name}-family.png")
        if info.confirmed is not None and not info.confirmed.table.empty:
            fig.plot_confirm(fig.get_confirm_plot_info(info.confirmed.table, m),
                             out / f"{info.name}-confirm.png")
        texts[info.name] = text
    return texts


def update_page(page: Path, texts: dict[str, str]) -> list[str]:
    """Replace each study's generated block in the findings page; returns the names
    replaced (a page without a study's markers is left as it is for that study)."""
    content = page.read_text(encoding="utf-8")
    done = []
    for name, text in texts.items():
        pat = re.compile(rf"(<!-- tables:{re.escape(name)} -->\n).*?(\n<!-- end tables:"
                         rf"{re.escape(name)} -->)", re.S)
        found = pat.search(content)
        if found:
            content = content[:found.start()] + found.group(1) + text + found.group(2) + \
                content[found.end():]
            done.append(name)
    page.write_text(content, encoding="utf-8")
    return done
