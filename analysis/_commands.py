"""``mistudy rank | export | report``: load, compute, then render."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import yaml

from trainables.closure import last_k_problem
from trainables.records import CONFIG_FILE, DEFAULT_LAST_K
from trainables.studyfolder import StudyPaths
from trainables.yamlio import safe_load

from . import _figures as fig
from ._edges import EdgeInfo, format_edges, get_edge_info
from ._errors import AnalysisError, StudyData
from ._load import is_bundle_data, load_study, study_settings
from ._rank import Selection, match_baselines, rank_schedules, trial_table
from ._table import confirm_cells, ranking_cells, render_html, render_text

__all__ = ["Analysis", "analyze", "format_ranking", "export_configs", "write_report",
           "log_ranking", "confirm_plan", "confirmation", "write_bundle"]

# Selected on validation (val_*), the held-out test reading beside it (test_*).
COLUMNS = ("schedule", "val_closure", "val_ci_low", "val_ci_high", "test_closure",
           "test_ci_low", "test_ci_high", "val_gap_reduction", "val_red_ci_low",
           "val_red_ci_high", "test_gap_reduction", "test_red_ci_low", "test_red_ci_high",
           "delta_val_acc", "delta_val_ce", "delta_test_acc", "delta_train_ce",
           "delta_train_ce_ci_low", "delta_train_ce_ci_high", "delta_test_ce",
           "delta_test_ce_ci_low", "delta_test_ce_ci_high", "closed_from", "feasible",
           "acc_drop", "pareto", "enqueued", "pruned", "n_seeds", "gap", "gap_baseline",
           "test_acc", "dpi_violation_rate", "saturation_epoch", "final_mi", "n_unmatched")


class Analysis(NamedTuple):
    data: StudyData
    trials: pd.DataFrame  # one row per usable trial (baselines included)
    matched: pd.DataFrame  # searched trials with their baselines
    ranking: pd.DataFrame  # one row per schedule
    notes: list[str]
    selection: Selection  # the validation metric and guards that order the ranking
    edges: list[EdgeInfo]  # the winner's searched values at an edge of their range


def analyze(study: str, tracking_uri: str | None = None, last_k: int | None = None,
            acc_tolerance: float = 0.02, phase: str = "search") -> Analysis:
    """Load and rank the runs of one phase (``search`` or ``confirm``). ``last_k``, the
    saturation settings, the selection metric and the guards default to the study's own (its
    spec), else ``records.DEFAULT_LAST_K``, the stopper's defaults and ``val_closure`` -- so the
    ranking agrees with what the search was told and with the MLflow tags."""
    if last_k is not None and (allowed := last_k_problem(last_k)):
        raise AnalysisError(f"last_k={last_k!r} -- allowed: {allowed}")
    settings = study_settings(study)
    last_k = last_k or settings.get("last_k", DEFAULT_LAST_K)
    selection = Selection(settings.get("select", "val_closure"),
                          settings.get("max_acc_drop"), settings.get("max_ce_rise"))
    data = load_study(study, tracking_uri)
    if not data.runs.empty:
        data = data._replace(runs=data.runs[data.runs.phase == phase].reset_index(drop=True))
    if data.runs.empty:
        raise AnalysisError(f"study {study!r} has no trial runs in {data.tracking_uri}")
    trials, notes = trial_table(data.runs, data.history, last_k, settings.get("saturation"))
    if trials.empty:
        raise AnalysisError(f"study {study!r} has no finished trials with metrics "
                            f"({len(notes)} left out: {notes[:2]})")
    if not trials.baseline.any():
        notes.append("no cross-entropy baseline in this study: closure is undefined; "
                     "run baselines (constant, c = 1) with the same batch sizes and seeds")
    matched = match_baselines(trials, data.history, last_k)
    for row in matched[~matched.matched].to_dict("records"):
        notes.append(f"trial {row['trial_id']}: no matched baseline "
                     f"(batch {row['p.batch_size']}, seed {row['p.seed']})")
    if matched.empty:
        raise AnalysisError(f"study {study!r} has only baselines: nothing to rank")
    ranking = rank_schedules(matched, acc_tolerance, selection=selection)
    edges = get_edge_info(ranking, trials, settings.get("search"))
    return Analysis(data, trials, matched, ranking, notes, selection, edges)


def write_bundle(folder: Path, out: Path) -> Path:
    """Bundle the study in ``folder`` (its MLflow runs and records, spec, Optuna study,
    confirmation plan) into ``out`` (:mod:`analysis._bundle`), written whole or not at all."""
    from trainables.fileio import UnreadableFile, atomic_write_bytes, read_regular_text

    from ._bundle import bundle_head, pack_bundle
    from ._load import MAX_STUDY_FILE_BYTES, optuna_trials, read_meta

    confirm = StudyPaths(folder).confirm_plan
    try:
        spec_text = read_regular_text(StudyPaths(folder).spec, MAX_STUDY_FILE_BYTES)
        plan = read_regular_text(confirm, MAX_STUDY_FILE_BYTES) \
            if confirm.exists() or confirm.is_symlink() else None
    except (UnreadableFile, FileNotFoundError) as exc:
        raise AnalysisError(str(exc)) from None
    data = pack_bundle(bundle_head(read_meta(folder)), spec_text, load_study(str(folder)),
                       optuna_trials(str(folder)), plan)
    atomic_write_bytes(out, data)
    return out


def confirm_plan(study: str) -> dict[str, Any] | None:
    """The study's confirmation plan (``confirm.json`` in a folder, or in a bundle)."""
    from . import _bundle

    if _bundle.is_bundle(study):
        return _bundle.read_bundle(study).confirm
    from trainables.fileio import UnreadableFile, read_regular_text

    from ._load import MAX_STUDY_FILE_BYTES

    path = StudyPaths(Path(study)).confirm_plan
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        plan = json.loads(read_regular_text(path, MAX_STUDY_FILE_BYTES))
    except UnreadableFile as exc:
        raise AnalysisError(str(exc)) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise AnalysisError(f"{path} is damaged ({type(exc).__name__})") from None
    problem = _bundle.confirm_problem(plan)
    if problem:
        raise AnalysisError(f"{path} is damaged: {problem}")
    return dict(plan)


def confirmation(study: str, search: Analysis | None = None) -> Any:
    """The confirmation table (``analysis._confirm.ConfirmInfo``) recomputed from the study's
    records, or None when the study has no confirmation runs yet."""
    from ._confirm import get_confirm_info

    plan = confirm_plan(study)
    if plan is None:
        return None
    search = search or analyze(study, phase="search")
    try:
        confirm = analyze(study, phase="confirm")
    except AnalysisError:
        return None  # planned, nothing finished yet
    drop = plan.get("max_acc_drop")
    return get_confirm_info(search.ranking, confirm.matched,
                            [s["schedule"] for s in plan["schedules"]], plan["metric"],
                            plan["seeds"], 0.01 if drop is None else float(drop),
                            data_seeds=None if plan.get("same_split", True)
                            else plan.get("data_seeds"))


def format_ranking(ranking: pd.DataFrame, fmt: str = "table", metric: str | None = None
                   ) -> str:
    """The ranking as ``table`` (the selection first, :data:`TABLE_WIDTH` columns wide),
    ``wide`` (every column), ``csv``, ``markdown`` or ``json`` (every column)."""
    if fmt == "table":
        return _compact(ranking, metric or "val_gap_reduction")
    df = ranking[list(COLUMNS)].copy()
    if fmt == "json":
        return json.dumps(json.loads(df.to_json(orient="records")), indent=2)
    if fmt == "csv":
        return str(df.to_csv(index=False))
    df.insert(0, "rank", range(1, len(df) + 1))
    if fmt == "markdown":
        return _markdown(df)
    with pd.option_context("display.width", 400, "display.max_colwidth", 60,
                           "display.float_format", "{:.4f}".format):
        return str(df.to_string(index=False))


def _num(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None or v != v else f"{v:+.{digits}f}"


def _compact(ranking: pd.DataFrame, metric: str) -> str:
    """One line per schedule, the selection first (``analysis._table.ranking_cells``, the
    report's rule too). Long schedule names are cut to fit."""
    cells = ranking_cells(ranking, metric)
    return "\n".join([render_text(cells), *cells.notes, "--wide: every column."])


def _markdown(df: pd.DataFrame) -> str:
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row]
             for row in df.itertuples(index=False)]
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    return "\n".join([head, sep] + ["| " + " | ".join(c) + " |" for c in cells])


def log_ranking(a: Analysis, log_text: Any = None) -> bool:
    """The ranking as artifacts of the study's parent run (``ranking.csv``, ``ranking.md``)
    through ``log_text(run_id, text, name)`` (default: MLflow's client; a study's sync passes
    its tracker's); False when there is no parent run."""
    if a.data.parent_run_id is None:
        return False
    if log_text is None:
        from mlflow.tracking import MlflowClient

        log_text = MlflowClient(a.data.tracking_uri).log_text
    log_text(a.data.parent_run_id, format_ranking(a.ranking, "csv"), "ranking.csv")
    log_text(a.data.parent_run_id, format_ranking(a.ranking, "markdown"), "ranking.md")
    return True


def _trial_config(a: Analysis, run_id: str) -> dict[str, Any]:
    import os

    from trainables.config import TrainConfig  # validates the exported config (imports torch)

    if is_bundle_data(a.data):  # a bundle holds each run's full config
        cfg = a.data.runs[a.data.runs.run_id == run_id].iloc[0]["config"]
        return TrainConfig.from_dict(dict(cfg)).to_dict()
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(a.data.tracking_uri)
    with tempfile.TemporaryDirectory() as d:
        path = client.download_artifacts(run_id, CONFIG_FILE, d)
        cfg = safe_load(Path(path).read_text(encoding="utf-8"), CONFIG_FILE)
    return TrainConfig.from_dict(cfg).to_dict()


def _rerun_spec(cfg: dict[str, Any], name: str, seeds: int) -> dict[str, Any]:
    """A study spec that reruns one schedule with ``seeds`` seeds (its baselines included)."""
    searched = ("transition", "alpha", "batch_size", "seed", "data_source", "threads")
    tr = cfg["transition"]
    return {"name": name, "fixed": {k: v for k, v in cfg.items() if k not in searched},
            "search": {"families": {tr["family"]: {k: v for k, v in tr.items()
                                                   if k != "family"}},
                       "alpha": cfg["alpha"], "batch_size": [cfg["batch_size"]]},
            "trials": 1, "seeds": list(range(seeds))}


def _export_rows(a: Analysis, include_flagged: bool, confirmed: Any) -> pd.DataFrame:
    """The schedules to export, best first: confirmed ones first when the study has a
    confirmation (by their confirmed test value), then the search's ranking."""
    rows = a.ranking if include_flagged else a.ranking[a.ranking.feasible]
    # a pruned schedule trained part of its epochs: never exported, flagged or not
    rows = rows[rows[a.selection.metric].notna() & ~rows.pruned.astype(bool)]
    if confirmed is None or confirmed.table.empty:
        return rows
    m = confirmed.metric.removeprefix("val_")
    order = confirmed.table.sort_values(f"confirmed_test_{m}", ascending=False,
                                        na_position="last").schedule.tolist()
    first = [s for s in order if s in set(rows.schedule)]
    rank = {s: i for i, s in enumerate(first)}
    return rows.assign(_o=[rank.get(s, len(rank)) for s in rows.schedule]).sort_values(
        "_o", kind="stable").drop(columns="_o")


def export_configs(a: Analysis, out: Path, top: int = 3, include_flagged: bool = False,
                   seeds: int = 5, confirmed: Any = None) -> list[Path]:
    """The best schedules' configs (``mistudy train --config``) and rerun specs
    (``mistudy run``): confirmed schedules first, then by the validation ranking; schedules
    breaking the guards only when asked. A previous export in ``out`` is replaced."""
    rows = _export_rows(a, include_flagged, confirmed).head(top)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("[0-9][0-9]-*.yaml"):
        old.unlink()  # another export's configs: never mixed with this one's
    conf = {} if confirmed is None else confirmed.table.set_index("schedule").to_dict("index")
    written = []
    for i, row in enumerate(rows.to_dict("records"), 1):
        cfg = _trial_config(a, row["run_ids"][0])
        stem = f"{i:02d}-{cfg['transition']['family']}"
        path = out / f"{stem}.yaml"
        head = (f"# rank {i} (selected on validation by {a.selection.metric}): "
                f"{row['schedule']}\n# validation closure {row['val_closure']:.4f} (95% CI "
                f"{row['val_ci_low']:.4f}..{row['val_ci_high']:.4f}, n={row['n_val']}), "
                f"test closure {row['test_closure']:.4f}, Δ test acc "
                f"{row['delta_test_acc']:+.4f}\n")
        c = conf.get(row["schedule"])
        if c is not None:
            head += (f"# confirmed on fresh seeds {confirmed.seeds}: test closure "
                     f"{c['confirmed_test_closure']:.4f} (95% CI "
                     f"{c['confirmed_closure_ci_low']:.4f}..{c['confirmed_closure_ci_high']:.4f})"
                     f"; {c['verdict']}\n")
        path.write_text(head + yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        spec = out / f"{stem}.study.yaml"
        spec.write_text(head + yaml.safe_dump(_rerun_spec(cfg, f"rerun-{stem}", seeds),
                                              sort_keys=False), encoding="utf-8")
        written += [path, spec]
    (out / "ranking.csv").write_text(format_ranking(a.ranking, "csv"), encoding="utf-8")
    return written


def _figures(a: Analysis, out: Path, top: int, confirmed: Any) -> dict[str, Path]:
    traj = fig.get_trajectory_info(a.ranking, a.trials, a.data.history, top)
    metric = a.selection.metric.removeprefix("val_")
    figures = {
        "trajectories": fig.plot_trajectories(traj, out / "trajectories.png"),
        "grad_norm": fig.plot_grad_norm(traj, out / "grad_norm.png"),
        "transitions": fig.plot_transitions(
            fig.get_transition_info(a.ranking, a.trials, top=max(top, 5)),
            out / "transitions.png"),
        "pareto": fig.plot_pareto(fig.get_pareto_info(a.ranking), out / "pareto.png"),
        "family": fig.plot_family(fig.get_family_info(a.ranking, metric), out / "family.png"),
    }
    if confirmed is not None and not confirmed.table.empty:
        figures["confirm"] = fig.plot_confirm(
            fig.get_confirm_plot_info(confirmed.table, confirmed.metric.removeprefix("val_")),
            out / "confirm.png")
    return figures


def write_report(a: Analysis, out: Path, top: int = 3, importance: Any = None,
                 confirmed: Any = None) -> Path:
    """PNG figures and one self-contained HTML page (figures embedded): the ranking, the
    confirmation on fresh seeds and the importance on closure (a list, one per target) when
    given."""
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(a, out, top, confirmed)
    imgs = "\n".join(
        f'<figure><img alt="{k}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{k}</figcaption></figure>'
        for k, p in figures.items())
    (out / "ranking.csv").write_text(format_ranking(a.ranking, "csv"), encoding="utf-8")
    cells = ranking_cells(a.ranking, a.selection.metric, sep=", ")
    table = (render_html(cells) + f'<p class="note">{html.escape(cells.page_note)}</p>'
             + '<details><summary>all columns</summary><div class="wide">'
             + a.ranking[list(COLUMNS)].to_html(index=False, float_format="{:.4f}".format,
                                               classes="ranking", border=0)
             + '</div></details> <a href="ranking.csv">ranking.csv</a>')
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in a.notes) or "<li>none</li>"
    edges = "".join(f'<p class="warn">{html.escape(w)}</p>' for w in format_edges(a.edges))
    page = _HTML.format(title=html.escape(a.data.experiment), n=len(a.trials),
                        select=html.escape(a.selection.metric),
                        table=table, imgs=imgs, notes=notes, edges=edges,
                        confirm=_confirm_html(confirmed), importance=_importance_html(importance))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _confirm_html(confirmed: Any) -> str:
    if confirmed is None or confirmed.table.empty:
        return ("<p>No confirmation yet: <code>mistudy confirm STUDY --top 5 --seeds 3</code> "
                "reruns the top schedules on fresh seeds.</p>")
    from ._confirm import fresh_text

    cells = confirm_cells(confirmed, sep=", ")
    rho = ", ".join(f"{k} {v:+.2f}" if v == v else f"{k} n/a"
                    for k, v in confirmed.spearman.items())
    return (f"<p>On {html.escape(fresh_text(confirmed))}; shrinkage = in-search validation "
            "value − confirmed test value; Δ against the matched CE baselines on the same "
            "seeds and draws.</p>"
            + render_html(cells, [str(v) for v in confirmed.table.verdict])
            + f"<p>Transfer (Spearman, in-search validation vs confirmed test): "
              f"{html.escape(rho)}</p>"
            + '<details><summary>all columns</summary><div class="wide">'
            + confirmed.table.to_html(index=False, float_format="{:.4f}".format,
                                      classes="ranking", border=0) + "</div></details>")


def _importance_html(importance: Any) -> str:
    parts = [i for i in (importance or []) if not i.table.empty]
    if not parts:
        return "<p>No importance (too few configurations with a validation value).</p>"
    return "".join(
        f"<p>Target: {html.escape(i.target)} (fANOVA and PED-ANOVA, normalized per scope; a "
        "family's own parameters only among its configurations).</p>"
        + i.table.to_html(index=False, float_format="{:.3f}".format, classes="ranking",
                          border=0) for i in parts)


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>mistudy: {title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}
table.ranking{{border-collapse:collapse;font-size:12px}}
table.ranking td,table.ranking th{{padding:3px 8px;border-bottom:1px solid #ddd}}
table.ranking th{{text-align:left;vertical-align:bottom}}
td.n{{text-align:right;white-space:nowrap}}
tr.line td{{border-top:2px solid #555;color:#555;font-style:italic;padding-top:6px}}
div.wide{{overflow-x:auto;max-width:100%}} p.note{{font-size:12px;color:#555;margin:2px 0}}
figure{{display:inline-block;margin:0.5em}} img{{max-width:100%}}
p.warn{{background:#fff4d6;padding:0.4em 0.8em;border-left:4px solid #e0a800}}</style></head><body>
<h1>mistudy report: {title}</h1>
<p>{n} trials. Schedules ranked by train–test gap closure against matched cross-entropy
baselines, <b>selected on validation</b> ({select}): closure = (gap<sub>baseline</sub> − gap) /
gap<sub>baseline</sub>, gap = CE − train CE over the last epochs; 95% bootstrap interval over
seeds; schedules breaking the guards (Δ validation accuracy, Δ validation CE) are infeasible and
ranked after the feasible ones. The test columns are the held-out reading, never used to
order.</p>
<h2>Ranking</h2>{edges}{table}
<h2>Confirmation on fresh seeds</h2>{confirm}
<h2>Importance on validation closure</h2>{importance}
<h2>Figures</h2>{imgs}
<h2>Notes</h2><ul>{notes}</ul>
</body></html>
"""
