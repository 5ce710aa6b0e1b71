"""``mistudy ui``: the MLflow UI on a study's store, as a well-behaved server.

It refuses a busy port (exit 2) before starting anything, prints one link that opens the
study's trial runs in chart view, and on SIGTERM or Ctrl-C stops the MLflow server and every
process it started (found through /proc, so a child that made its own session is stopped too).

**What the link shows** is decided by MLflow's *shared view*: an experiment tag
``mlflow.sharedViewState.<key>`` holds a view state (the run search and the UI state MLflow
otherwise keeps in the browser), and ``viewStateShareKey=<key>`` in the URL opens it -- the
mechanism of MLflow's own "Share" button (MLflow 3.17). :func:`get_view_info` fills it from the
ranking: the top schedules' seed runs **and their matched CE baselines** are the visible runs
(at most :data:`VISIBLE_RUNS`, the runs MLflow charts) and pinned to the top of the table, every
other run hidden (one click shows it); the MI trajectories and the gaps come first, in a
section of their own, MLflow's generated charts of every other metric after them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

from trainables.records import TAGS, TRIAL_RUNS, VIEW_ORDER

from ._guardian import spawn_tied

__all__ = ["runs_link", "port_free", "serve", "descendants", "ViewInfo", "get_view_info",
           "view_state", "share_view", "experiment_id", "ensure_shared_view", "SHARE_KEY",
           "VIEW_ORDER", "SHARE_TAG", "VISIBLE_RUNS", "FIRST_CHARTS"]

TRIAL_FILTER = TRIAL_RUNS
SHARE_KEY = "mistudy-top"  # the view the printed link opens
SHARE_TAG = f"mlflow.sharedViewState.{SHARE_KEY}"  # MLflow's own tag prefix for a shared view
VISIBLE_RUNS = 10  # MLflow shows the first 10 runs (FIRST_10_RUNS) and charts that many
FIRST_CHARTS = ("mi_y_yhat", "mi_y_x", "gap", "val_gap", "train_ce", "test_ce", "transition")
_QUERY = {"searchFilter": TRIAL_FILTER, "orderByKey": "metrics.`gap_closure`",
          "orderByAsc": "false"}


def runs_link(base: str, experiment_id: str | None, shared: bool = False) -> str:
    """The study's trial runs in chart view. MLflow's URL state does the work:
    ``workflowType`` opens the model-training UI (not the GenAI overview); a search filter
    plus a sort key other than the start time lists the trial runs flat instead of collapsed
    under the study's parent; with ``shared``, ``viewStateShareKey`` opens the view
    :func:`view_state` stored on the experiment (the schedules beside their baselines)."""
    params = {**_QUERY, "compareRunsMode": "CHART", "workflowType": "machine_learning"}
    if shared:  # the search comes from the stored view (a search in the URL would end it)
        params = {"viewStateShareKey": SHARE_KEY, "compareRunsMode": "CHART",
                  "workflowType": "machine_learning"}
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    if experiment_id is None:
        return f"{base.rstrip('/')}/#/experiments"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


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


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now. SO_REUSEADDR as servers set it:
    connections of a stopped server in TIME_WAIT do not hold the port, a listener does."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _stop_tree(proc: subprocess.Popen) -> None:
    tree = descendants(proc.pid)
    for pid in [proc.pid, *tree]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in [proc.pid, *tree]):
        time.sleep(0.1)
        proc.poll()
    for pid in [proc.pid, *tree]:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_ready(url: str, proc: subprocess.Popen, stop: dict[str, bool]) -> bool:
    """Until the server answers, exits, or we are told to stop (a loaded machine can take a
    minute to import MLflow: the link is printed whenever it is ready)."""
    while not stop["now"] and proc.poll() is None:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            return True
        except Exception:
            time.sleep(0.3)
    return False


def local_host(host: str) -> str:
    """Where this machine reaches a server bound to ``host``."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def url_base(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _reachable(wildcard: str) -> str:
    """For a server on every address: this machine's name, which other machines can use
    (``0.0.0.0`` is no address to open)."""
    return socket.getfqdn() or local_host(wildcard)


def serve(uri: str, artifacts: str | None, host: str, port: int, experiment_id: str | None,
          log: Path, shared: bool = False) -> int:
    """Run the MLflow server until SIGTERM/Ctrl-C; then stop its whole process tree. The
    server's own output goes to ``log``."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", host, "--port", str(port)]
    if artifacts:
        cmd += ["--default-artifact-root", artifacts]
    # MLflow 3's job runner (GenAI evaluation jobs, ~10 huey worker processes) serves nothing
    # a study reads; off unless the user turned it on.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION":
           os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    from trainables.fileio import open_append

    with open_append(log) as fh:  # tied to our life: a SIGKILL of `mistudy ui` ends it too
        proc = spawn_tied(cmd, stdout=fh, stderr=fh, env=env)
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(f"starting the MLflow server on {url_base(host, port)} ...", flush=True)
        if _wait_ready(url_base(local_host(host), port), proc, stop):
            base = url_base(host if host not in ("0.0.0.0", "::") else _reachable(host), port)
            print(f"MLflow UI: {runs_link(base, experiment_id, shared)}\n(Ctrl-C to stop; "
                  f"server log: {log})", flush=True)
        elif proc.poll() is not None:
            print(f"error: the MLflow server exited ({proc.returncode}); see {log}",
                  file=sys.stderr)
        while not stop["now"] and proc.poll() is None:
            time.sleep(0.2)
        return 0 if stop["now"] else (proc.returncode or 1)
    finally:
        _stop_tree(proc)
        for s, h in old.items():
            signal.signal(s, h)
