"""Load a study's runs and per-epoch records from MLflow into pandas, through MLflow's public
client only (no store schema): runs page by page, and each finished run's records in one read
of the ``metrics.csv`` the tracker logs beside its metrics (a local file, or one GET of the
tracking server's artifact proxy); the metric histories only for runs that have no file yet
(still running, or killed before their finish). From a tracking server the search runs in
parallel start-time slices and the downloads in 16 threads, starting as each slice arrives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from trainables.closure import guard_problem, last_k_problem
from trainables.fileio import UnreadableFile, read_regular_text
from trainables.records import (
    BASELINE_KEY,
    METRICS_FILE,
    PARENT_RUN,
    RECORD_KEYS,
    TAGS,
    TRIAL_RUNS,
    flatten,
    parse_metrics,
    read_metrics,
    schedule_text,
    study_filter,
    typed_config,
)
from trainables.runsearch import search_all_runs, search_slices
from trainables.saturation import saturation_settings
from trainables.studyfolder import (
    StudyPaths,
    credentials_to_env,
    optuna_study_name,
    sqlite_path,
    tracking_problem,
    tracking_uri_of,
)

from ._errors import AnalysisError, StudyData
from ._sqlite_runs import read_runs

__all__ = ["load_study", "resolve_study", "study_settings", "settings_from_spec",
           "optuna_trials", "is_bundle_data"]


STUDY_JSON_ERRORS = (OSError, ValueError, KeyError, TypeError)
MAX_STUDY_FILE_BYTES = 16 * 2**20  # study.json, spec.yaml: far below this when sound


def read_meta(folder: Path) -> dict[str, Any]:
    path = StudyPaths(folder).meta
    try:
        return dict(json.loads(read_regular_text(path, MAX_STUDY_FILE_BYTES)))
    except UnreadableFile as exc:
        raise AnalysisError(str(exc)) from None
    except STUDY_JSON_ERRORS as exc:
        raise AnalysisError(f"{path} is damaged ({type(exc).__name__})") from None


DEFAULT_SAMPLER_LAG = 2  # study.spec's default (a spec without the key)


def study_settings(study: str) -> dict[str, Any]:
    """The study's own ``last_k``, saturation-stopper settings, selection metric and guards,
    from the spec in a study folder or bundle (empty for an MLflow experiment name), so a
    ranking uses what the study itself used."""
    from . import _bundle

    if _bundle.is_bundle(study):
        return settings_from_spec(_bundle.read_bundle(study).spec_text, study)
    path = StudyPaths(Path(study)).spec
    if not (path.exists() or path.is_symlink()):
        return {}
    try:
        text = read_regular_text(path, MAX_STUDY_FILE_BYTES)
    except UnreadableFile as exc:
        raise AnalysisError(str(exc)) from None
    return settings_from_spec(text, str(path))


def settings_from_spec(text: str, where: str) -> dict[str, Any]:
    from trainables.yamlio import safe_load

    try:
        raw = safe_load(text, where) or {}
        obj = raw.get("objective") or {}
        obj = obj[-1] if isinstance(obj, list) and obj else obj
        stop = saturation_settings(raw.get("stopper"))
        out: dict[str, Any] = {"saturation": stop}
        if isinstance(raw.get("search"), dict):
            out["search"] = raw["search"]  # the searched ranges (the range-edge warning)
        # the search's order rule (study.spec: an integer lag, or "async"); replay follows it
        lag = raw.get("sampler_lag", DEFAULT_SAMPLER_LAG)
        out["sampler_lag"] = None if lag == "async" else int(lag)
        out["sampler_seed"] = raw.get("sampler_seed", 0)
        if isinstance(obj, dict) and "last_k" in obj:
            problem = last_k_problem(obj["last_k"])
            if problem:
                raise AnalysisError(f"{where}: objective.last_k: {obj['last_k']!r} -- {problem}")
            out["last_k"] = int(obj["last_k"])
        items = raw.get("objective") or {}
        items = items if isinstance(items, list) else [items]
        for item in items:
            if isinstance(item, dict):
                if item.get("metric") in ("val_closure", "val_gap_reduction") \
                        and "select" not in out:
                    out["select"] = item["metric"]
                for g in ("max_acc_drop", "max_ce_rise"):
                    problem = guard_problem(item.get(g))
                    if problem:  # refused as the spec refuses it: never read as no guard
                        raise AnalysisError(f"{where}: objective.{g}: {item[g]!r} -- {problem}")
                    if item.get(g) is not None:
                        out[g] = float(item[g])
        return out
    except (ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise AnalysisError(f"{where}: not a readable spec ({type(exc).__name__}); the study's "
                            "settings cannot be read") from None


def resolve_study(study: str, tracking_uri: str | None) -> tuple[str, str, str | None]:
    """``STUDY`` is an MLflow experiment name or id, or a study folder (its study.json says
    where it logs). Returns (tracking uri, experiment name or id, study id filter)."""
    if StudyPaths(Path(study)).is_study():
        meta = read_meta(Path(study))
        uri, _ = tracking_uri_of(meta, Path(study))
        return tracking_uri or uri, meta["experiment"], meta["study_id"]
    import os

    given = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if given is None and Path("mlflow.db").is_file():
        given = "sqlite:///mlflow.db"  # MLflow's own default store, where it exists
    if given is None:
        what = "a folder without study.json" if Path(study).is_dir() else \
            "no study bundle" if Path(study).exists() else "no file or folder"
        raise AnalysisError(f"{study!r} is {what}; STUDY is a study folder, a bundle, or an "
                            f"MLflow experiment name with --tracking-uri URI")
    store = sqlite_path(given)
    if store is not None and not Path(store).is_file():  # MLflow would create an empty one
        raise AnalysisError(f"the MLflow store {store} does not exist (--tracking-uri "
                            f"{given})")
    return given, study, None


def _experiment(client: Any, study: str) -> Any:
    exp = client.get_experiment_by_name(study)
    if exp is None and study.isdigit():
        try:
            exp = client.get_experiment(study)
        except Exception:
            exp = None
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise AnalysisError(f"unknown study {study!r}: no MLflow experiment with that name or "
                            f"id; known: {names}")
    return exp


def _runs_frame(runs: list[Any]) -> pd.DataFrame:
    rows = []
    for r in runs:
        tags, params = r.data.tags, r.data.params
        baseline = tags.get(TAGS.baseline) == "true"
        config = typed_config(params)  # exact types back from the text MLflow stores
        row: dict[str, Any] = {
            "run_id": r.info.run_id, "status": r.info.status,
            "study_id": tags.get(TAGS.study_id), "trial_id": tags.get(TAGS.trial_id),
            "baseline": baseline, "start_time": r.info.start_time,
            "schedule": schedule_text({**config, BASELINE_KEY: baseline}),
            "phase": tags.get(TAGS.phase) or "search",
            "enqueued": tags.get(TAGS.enqueued) == "true",
            "pruned": tags.get(TAGS.told) == "PRUNED",
            # Optuna's configuration number (the ordered search's and the pruner's order)
            "optuna_trial": int(tags[TAGS.optuna_trial])
            if (tags.get(TAGS.optuna_trial) or "").isdigit() else None,
            "config": config,
        }
        row.update({f"p.{k}": v for k, v in flatten(config).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _local_csv(artifact_uri: str, folder: Path | None) -> Path | None:
    """The run's ``metrics.csv`` on this machine's disk, when its artifacts are local files; a
    study folder copied or moved elsewhere keeps its artifacts under its own mlartifacts/."""
    import urllib.parse

    parts = urllib.parse.urlsplit(artifact_uri)
    if parts.scheme not in ("file", ""):
        return None
    path = Path(urllib.parse.unquote(parts.path)) / METRICS_FILE
    return (StudyPaths(folder).relocated(path) if folder is not None else None) or path


def _records_of(client: Any, run: Any, folder: Path | None,
                get: Callable[[str], Any] | None = None) -> list[dict[str, float]] | None:
    """A finished run's per-epoch records in one read: the metrics.csv the tracker logs with
    it (the same numbers as its metric histories; a file, or one artifact download)."""
    if run.info.status == "RUNNING":
        return None  # its file comes at the finish; the histories are current
    local = _local_csv(run.info.artifact_uri, folder)
    try:
        if local is not None:
            return read_metrics(local) if local.is_file() else None
        uri = run.info.artifact_uri
        if uri.startswith(_PROXIED) and not uri.startswith(_PROXIED + "/"):
            return _proxied_csv(get or _proxy_getter(client.tracking_uri), uri)
        import tempfile

        from mlflow.artifacts import download_artifacts

        with tempfile.TemporaryDirectory() as d:  # other stores (s3:, another host, ...)
            return read_metrics(Path(download_artifacts(
                artifact_uri=f"{run.info.artifact_uri}/{METRICS_FILE}", dst_path=d,
                tracking_uri=client.tracking_uri)))
    except Exception:
        return None  # no file (killed before its finish): the histories below


_PROXIED = "mlflow-artifacts:/"  # artifacts the tracking server itself serves
_ARTIFACTS_ENDPOINT = "/api/2.0/mlflow-artifacts/artifacts/"  # MLflow's artifact REST API


def _proxied_csv(get: Callable[[str], Any], artifact_uri: str) -> list[dict[str, float]] | None:
    """A run's ``metrics.csv`` from the tracking server's artifact proxy in one GET of the
    REST endpoint (``get`` from :func:`_proxy_getter`). ``download_artifacts`` lists the path
    before fetching it (two requests, and 2.6x the time at 1,000 runs). A URI with another
    host (``mlflow-artifacts://host/...``) goes through ``download_artifacts``."""
    resp = get(f"{_ARTIFACTS_ENDPOINT}{artifact_uri[len(_PROXIED):]}/{METRICS_FILE}")
    return parse_metrics(resp.text.splitlines()) if resp.status_code == 200 else None


def _proxy_getter(tracking_uri: str) -> Callable[[str], Any]:
    """GET of a server path with MLflow's credentials, headers and retry policy. MLflow's
    ``http_request`` resolves its request-header plugins on every call (1.2 ms of client CPU,
    a quarter of a metrics.csv download at 1,000 runs); for a server reached without
    credentials (TLS settings aside) the headers are resolved once here and each GET goes
    through MLflow's retrying request on its shared keep-alive session. With credentials of
    any kind every GET goes through ``http_request``."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )
    from mlflow.tracking.request_header.registry import resolve_request_headers
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.request_utils import cloud_storage_http_request
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(tracking_uri)
    if any(getattr(creds, k, None) for k in _CREDENTIALS) or set(os.environ) & _HEADER_ENV:
        return lambda endpoint: http_request(creds, endpoint, "GET", raise_on_status=False)
    host = creds.host.rstrip("/")
    kwargs = {"headers": dict(resolve_request_headers()), "verify": creds.verify,
              "cert": creds.client_cert_path, "timeout": MLFLOW_HTTP_REQUEST_TIMEOUT.get(),
              "max_retries": MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(),
              "backoff_factor": MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
              "backoff_jitter": MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get()}
    return lambda endpoint: cloud_storage_http_request("GET", host + endpoint, **kwargs)


# What sends a request through MLflow's http_request each time (_proxy_getter): credentials,
# auth plugins, Databricks, and the environment that adds per-request headers.
_CREDENTIALS = ("username", "password", "token", "aws_sigv4", "auth", "use_databricks_sdk",
                "client_id", "client_secret", "workspace_id")
_HEADER_ENV = {"MLFLOW_WORKSPACE", "MLFLOW_DATABRICKS_TRAFFIC_ID"}
_THREADS = 16  # parallel downloads from a tracking server
_SEARCH_SLICES = 4  # parallel searches of a tracking server (3.2 s -> 1.8 s at 1,000 runs)


def _is_local(client: Any) -> bool:
    """SQLite and local files: no server to wait on, so threads would only contend for the
    GIL."""
    return not client.tracking_uri.startswith(("http:", "https:"))


def _histories(client: Any, run_id: str) -> list[dict[str, float]]:
    """One run's records from its metric histories (one call per record key)."""
    by_epoch: dict[int, dict[str, float]] = {}
    for key in RECORD_KEYS:
        for m in client.get_metric_history(run_id, key):
            by_epoch.setdefault(int(m.step), {})[key] = float(m.value)
    return [{**r, "epoch": e} for e, r in sorted(by_epoch.items())]


def _runs_and_history(client: Any, experiment_id: str, flt: str,
                      folder: Path | None) -> tuple[list[Any], pd.DataFrame]:
    """The runs matching ``flt`` (in start order) and every run's records, one row per
    (run_id, epoch), through MLflow's public API: the metrics.csv of finished runs, the metric
    histories of the rest (running, killed before their finish). From a tracking server the
    search runs in parallel slices and each slice's downloads start as it arrives (16
    threads): at 1,000 runs on a local server, 3.8 s in turn, 3.4 s overlapped."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run
    if _is_local(client):
        runs = search_all_runs(client, experiment_id, flt)
        return runs, _frame([_run_rows(client, run, folder, None) for run in runs])
    get = _proxy_getter(client.tracking_uri)
    found: dict[int, list[Any]] = {}
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        futures = []
        for i, part in search_slices(client, experiment_id, flt, _SEARCH_SLICES):
            found[i] = part
            futures += [pool.submit(_run_rows, client, run, folder, get) for run in part]
        parts = [f.result() for f in futures]
    return [run for i in sorted(found) for run in found[i]], _frame(parts)


class _LazyClient:
    """What :func:`_run_rows` asks of a client, for a local store read without MLflow's: the
    tracking URI, and metric histories -- the client is made only for a run that needs them
    (no metrics.csv: running, or killed before its finish)."""

    def __init__(self, uri: str) -> None:
        self.tracking_uri = uri
        self._client: Any = None

    def get_metric_history(self, run_id: str, key: str) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client.get_metric_history(run_id, key)


def _run_rows(client: Any, run: Any, folder: Path | None,
              get: Callable[[str], Any] | None) -> list[dict[str, Any]]:
    """One run's records as rows of the history frame."""
    recs = _records_of(client, run, folder, get)
    if recs is None:
        recs = _histories(client, run.info.run_id)
    return [{"run_id": run.info.run_id, **{k: v for k, v in r.items() if k in RECORD_KEYS}}
            for r in recs]


def _frame(parts: list[list[dict[str, Any]]]) -> pd.DataFrame:
    rows = [row for part in parts for row in part]
    if not rows:
        return pd.DataFrame(columns=["run_id", *RECORD_KEYS])
    wide = pd.DataFrame(rows)
    wide["epoch"] = wide["epoch"].astype(int)
    return wide.sort_values(["run_id", "epoch"]).reset_index(drop=True)


# Set to 0 to read a local SQLite store through MLflow's client instead of from its tables
# (the benchmark's "before"; a way round the direct reader should MLflow's schema change).
DIRECT_ENV = "MISTUDY_SQLITE_DIRECT"


def load_study(study: str, tracking_uri: str | None = None) -> StudyData:
    """A study's trial runs and records: from a study folder or MLflow experiment (its
    tracking store), or from a bundle file (``mistudy export --bundle``)."""
    from . import _bundle

    if _bundle.is_bundle(study):
        return _bundle.read_bundle(study).data
    uri, name, study_id = resolve_study(study, tracking_uri)
    folder = Path(study).resolve() if StudyPaths(Path(study)).is_study() else None
    db = sqlite_path(uri)
    if db is not None and db.is_file() and os.environ.get(DIRECT_ENV, "1") != "0":
        # a local store: read straight from its tables (analysis._sqlite_runs)
        found = read_runs(db, name, study_id)
        if found is not None and found.runs:
            lazy = _LazyClient(uri)  # one, made into MLflow's only if a run needs histories
            return StudyData(found.experiment_id, found.name, uri, _runs_frame(found.runs),
                             _frame([_run_rows(lazy, run, folder, None)
                                     for run in found.runs]),
                             found.parent_run_id)
    from mlflow.tracking import MlflowClient

    problem = tracking_problem(uri)  # fail fast: MLflow's client retries for minutes
    if problem:
        raise AnalysisError(problem)
    uri = credentials_to_env(uri)  # the password goes to MLflow's env, never into a URL
    client = MlflowClient(uri)
    try:
        exp = _experiment(client, name)
    except AnalysisError:
        raise
    except Exception as exc:
        raise AnalysisError(f"cannot reach the tracking store {uri}: "
                            f"{type(exc).__name__}") from None
    flt = TRIAL_RUNS
    if study_id:
        flt += f" and {study_filter(study_id)}"
    runs, history = _runs_and_history(client, exp.experiment_id, flt, folder)
    parents = client.search_runs([exp.experiment_id],
                                 filter_string=PARENT_RUN
                                 + (f" and {study_filter(study_id)}" if study_id else ""),
                                 order_by=["attributes.start_time DESC"], max_results=1)
    return StudyData(str(exp.experiment_id), exp.name, uri, _runs_frame(runs), history,
                     parents[0].info.run_id if parents else None)


def optuna_trials(study: str) -> list[dict[str, Any]]:
    """The stored Optuna study's configurations of a study folder (``optuna.db``) or bundle:
    dicts with ``number``, ``state``, ``params``, ``distributions``, ``values``,
    ``user_attrs`` (the searcher's validation comparison, means over seeds)."""
    from . import _bundle

    if _bundle.is_bundle(study):
        return _bundle.read_bundle(study).optuna
    paths = StudyPaths(Path(study))
    if not paths.is_study() or not os.path.lexists(paths.optuna_db):
        raise AnalysisError(f"{study!r} is no study folder with an optuna.db (importance "
                            "reads the stored Optuna study)")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    meta = read_meta(paths.root)
    name = optuna_study_name(meta)
    storage = paths.optuna
    try:
        stored = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return []  # nothing was told yet
    return [frozen_to_dict(t) for t in stored.get_trials(deepcopy=False)]


def frozen_to_dict(t: Any) -> dict[str, Any]:
    return {"number": t.number, "state": t.state.name, "params": dict(t.params),
            "distributions": dict(t.distributions), "values": t.values,
            "user_attrs": dict(t.user_attrs)}


def is_bundle_data(data: StudyData) -> bool:
    """Loaded from a bundle file (no MLflow store behind it)."""
    return data.tracking_uri.startswith("bundle:")
