"""The study's shared view in MLflow: what the ``mistudy ui`` link opens.

MLflow's *shared view*: an experiment tag ``mlflow.sharedViewState.<key>`` holds a view state
(the run search and the UI state MLflow otherwise keeps in the browser), and
``viewStateShareKey=<key>`` in the URL opens it -- the mechanism of MLflow's own "Share" button
(MLflow 3.17). :func:`get_view_info` fills it from the ranking: the top schedules' seed runs
**and their matched CE baselines** are the visible runs (at most :data:`VISIBLE_RUNS`) and
pinned to the top of the table, every other run hidden (one click shows it); runs are grouped
by their chart group (``trainables.records.run_group``), so a schedule's seeds are one line
(their mean, with the min-max band) beside its baseline's; the MI trajectories and the gaps
come first, in a section of their own.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

from trainables.records import TAGS, TRIAL_RUNS, VIEW_ORDER

__all__ = ["ViewInfo", "get_view_info", "view_state", "share_view", "experiment_id",
           "ensure_shared_view", "SHARE_KEY", "SHARE_TAG", "VISIBLE_RUNS", "FIRST_CHARTS",
           "TRIAL_FILTER"]

TRIAL_FILTER = TRIAL_RUNS
SHARE_KEY = "mistudy-top"  # the view the printed link opens
SHARE_TAG = f"mlflow.sharedViewState.{SHARE_KEY}"  # MLflow's own tag prefix for a shared view
VISIBLE_RUNS = 10  # MLflow shows the first 10 runs (FIRST_10_RUNS) and charts that many
FIRST_CHARTS = ("mi_y_yhat", "mi_y_x", "gap", "val_gap", "train_ce", "test_ce", "transition")

class ViewInfo(NamedTuple):
    """The runs the link charts: top schedules with their matched baselines."""

    visible: list[str]  # run ids, in table order (each schedule's seeds, then its baselines)
    schedules: list[str]  # the schedules shown, best first
    baselines: list[str]  # the visible baseline run ids
    order: dict[str, int]  # run id -> its place in the table (VIEW_ORDER), visible ones first


def get_view_info(ranking: Any, trials: Any, limit: int = VISIBLE_RUNS) -> ViewInfo:
    """The ranking's top schedules (feasible first, as ranked) with the runs of their matched
    baselines, as many schedules as fit in ``limit`` runs (always the first); every ranked
    run and baseline gets its place in the table, the visible ones first."""
    from trainables.closure import match_key

    base: dict[tuple[str, ...], list[str]] = {}
    config = dict(zip(trials.run_id, trials.config, strict=False))
    for row in trials[trials.baseline].to_dict("records"):
        base.setdefault(match_key(row["config"]), []).append(row["run_id"])
    groups = []
    for row in ranking.to_dict("records"):
        runs = list(row["run_ids"])
        theirs = list(dict.fromkeys(b for r in runs for b in base.get(match_key(config[r]), [])))
        groups.append((str(row["schedule"]), runs, theirs, bool(row["feasible"])))
    visible: list[str] = []
    schedules: list[str] = []
    for label, runs, mine, feasible in groups:
        new = runs + [b for b in mine if b not in visible]
        if schedules and (len(visible) + len(new) > limit or not feasible):
            break  # the top feasible schedules only (the first shown whatever it is)
        schedules.append(label)
        visible += new
    rest = [r for _, runs, theirs, _ in groups for r in runs + theirs]
    order = {r: i for i, r in enumerate(dict.fromkeys(visible + rest), 1)}
    baselines = [b for b in visible if b in {x for v in base.values() for x in v}]
    return ViewInfo(visible, schedules, baselines, order)


def share_view(tracker: Any, ranking: Any, trials: Any,
               values: dict[str, dict[str, float]] | None = None) -> ViewInfo:
    """Store the view of :func:`get_view_info` on the study's experiment (the tag the link
    with ``shared=True`` opens) and each run's place in it (the metric :data:`VIEW_ORDER`,
    which the view sorts by: MLflow's per-run visibility is not part of a shared view). Each
    run's other ``values`` go in the same write."""
    import json

    info = get_view_info(ranking, trials)
    values = values or {}
    for run_id in dict.fromkeys([*info.order, *values]):
        place = info.order.get(run_id)
        tracker.log_values(run_id, {**values.get(run_id, {}),
                                    **({} if place is None else {VIEW_ORDER: float(place)})})
    tracker.set_experiment_tag(SHARE_TAG, json.dumps(view_state(info)))
    return info


def experiment_id(meta: dict[str, Any]) -> str | None:
    """The study's experiment id, or None when the store cannot be asked (the link then opens
    the experiment list)."""
    import os

    from mlflow.tracking import MlflowClient

    from trainables.studyfolder import credentials_to_env as _credentials_to_env

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    try:
        client = MlflowClient(_credentials_to_env(meta["tracking_uri"]))
        exp = client.get_experiment_by_name(meta["experiment"])
    except Exception:
        return None
    return str(exp.experiment_id) if exp is not None else None


def ensure_shared_view(out: str, meta: dict[str, Any]) -> bool:
    """Whether the study's experiment holds the view the link opens (every study's end and
    ``mistudy sync`` store it; made here from the ranking when missing). False when there is
    nothing to rank yet or the store refuses the tag: the link then opens the run list."""
    from analysis import AnalysisError, analyze

    from ._tracking import Tracker

    try:
        tracker = Tracker(meta["tracking_uri"], meta["experiment"], meta["study_id"])
        if SHARE_TAG in tracker.experiment_tags():
            return True
        a = analyze(out)
        share_view(tracker, a.ranking, a.trials)
    except (AnalysisError, OSError):
        return False
    except Exception as exc:  # the server may refuse the write: the plain link still works
        print(f"note: the charted view could not be stored ({type(exc).__name__}); the "
              f"link opens the run list", file=sys.stderr)
        return False
    return True


def _line_chart(metric: str, section: str, runs: int) -> dict[str, Any]:
    """A line chart card as MLflow 3.17's run-charts state holds one (its line card), drawing
    the first ``runs`` visible runs."""
    return {"uuid": f"mistudy-{metric}", "type": "LINE", "runsCountToCompare": runs,
            "metricSectionId": section, "deleted": False, "isGenerated": True,
            "metricKey": metric, "selectedMetricKeys": [metric], "displayName": metric,
            "lineSmoothness": 0, "xAxisScaleType": "linear", "scaleType": "linear",
            "range": {}, "xAxisKey": "step", "selectedXAxisMetricKey": "",
            "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False,
            "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True}


def view_state(info: ViewInfo) -> dict[str, Any]:
    """The shared view's JSON: the trial runs sorted by their place in the view, the first
    :data:`VISIBLE_RUNS` shown, and the MI charts first, drawing exactly the visible schedules
    and baselines (MLflow adds a chart for every other metric after them)."""
    section = "mistudy-mi"
    return {
        "searchFilter": TRIAL_FILTER, "orderByKey": f"metrics.`{VIEW_ORDER}`",
        "orderByAsc": True, "runsHiddenMode": "FIRST_10_RUNS",
        "compareRunCharts": [_line_chart(m, section, len(info.visible))
                             for m in FIRST_CHARTS],
        "compareRunSections": [
            {"uuid": section, "name": "MI and the gap: the top schedules and their CE baselines",
             "display": True, "isReordered": True, "deleted": False, "isGenerated": False}],
        "isAccordionReordered": True, "hideEmptyCharts": True,
        # one line per schedule: its seeds' mean with the min-max band (MLflow's own grouping,
        # by the run's chart group: each schedule, each batch size's CE baseline, and pruned
        # and confirmation runs apart -- trainables.records.run_group)
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "tag", "groupByData": TAGS.group}]},
        "useGroupedValuesInCharts": True,
    }
