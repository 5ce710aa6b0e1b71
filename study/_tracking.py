"""MLflow for a study: one experiment, one parent run, one nested child run per Tune trial.

**Where logging happens:** in the driver only (a Tune callback, plus :func:`sync_study`).
Workers on other nodes never talk to MLflow: their results reach the driver through Tune, so
an SQLite store works on a cluster, and a tracking server needs to be reachable from the
driver alone.

**One run per trial, ever:** a trial's run is found by its tags (study id + Tune trial id)
before one is created, and metrics are logged per epoch only for steps the run does not hold
yet. A resumed trial re-reports the epochs after its last checkpoint: they are recognized and
skipped. When the tracking store fails, records stay buffered and are flushed on the next
event; at the end of every study (and with ``mistudy sync``) the store is reconciled with
Tune's own per-trial ``result.json``, the source of truth.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from trainables.checkpoint import PLOT_FILE, read_history
from trainables.closure import last_k_mean
from trainables.config import TrainConfig
from trainables.plots import plot_trial
from trainables.records import (
    BASELINE_KEY,
    CONFIG_FILE,
    DEFAULT_LAST_K,
    ENQUEUED_KEY,
    METRICS_FILE,
    PARENT_RUN,
    PHASE_KEY,
    RECORD_KEYS,
    ROLE_PARENT,
    ROLE_TRIAL,
    SPEC_FILE,
    TAGS,
    TRIAL_RUNS,
    flatten,
    param_text,
    run_group,
    run_name,
    schedule_text,
    study_filter,
    train_config_of,
    write_metrics,
)
from trainables.runsearch import search_all_runs
from trainables.saturation import saturation_epoch, saturation_settings
from trainables.studyfolder import credentials_to_env as _credentials_to_env

from ._folder import Location, Study
from ._sqlite import ensure_mlflow_store

__all__ = ["Tracker", "no_backoff_in_this_thread", "study_tracker"]

_REDACT = ("token", "password", "secret")
METRICS_PER_CALL = 1000  # MLflow's log_batch limit
# MLflow 3's UI opens an experiment by its kind: without this tag it guesses, and an
# experiment with no traces opens on the GenAI overview. "custom_model_development" is the
# value MLflow's own UI writes when a user picks "Machine learning" (mlflow/server/js).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

# Threads that retry on their own ask MLflow for no retries of its own (see below).
_THREAD = threading.local()


def no_backoff_in_this_thread() -> None:
    """The calling thread's requests to a tracking server fail at once instead of entering
    MLflow's backoff (7 retries, 2 s doubling to 120 s: ~4 minutes). For the logging thread,
    which keeps its records and retries every 2 s itself: under MLflow's backoff a request
    sent while the server was down waited for its next backoff slot, so records reached a
    restarted server up to minutes late and the study's end waited on them (a test that
    restarts the server took 40-290 s for the same study). Other threads keep MLflow's policy,
    and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, when set, applies here too.

    MLflow reads the retry count per request from one module-level object
    (``mlflow.environment_variables``): its ``get`` is wrapped once per process to consult
    this thread's setting first. ``study._versions`` admits only MLflow versions tested so."""
    import os

    from mlflow import environment_variables as env

    var = env.MLFLOW_HTTP_REQUEST_MAX_RETRIES
    if "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in os.environ:
        return  # the user's choice holds in every thread
    if not getattr(var, "_mistudy_per_thread", False):
        process_wide = var.get

        def get() -> Any:
            return _THREAD.max_retries if hasattr(_THREAD, "max_retries") else process_wide()

        var.get = get  # type: ignore[method-assign]
        var._mistudy_per_thread = True  # type: ignore[attr-defined]
    _THREAD.max_retries = 0


def _safe_params(d: Mapping[str, Any]) -> dict[str, str]:
    """Flattened params as strings; never a secret (tokens, passwords, credentials in URIs)."""
    out = {}
    for k, v in flatten(d).items():
        if any(s in k.lower() for s in _REDACT):
            continue
        out[k] = param_text(v)[:500]
    return out


def _trial_plot(trial_dir: str | Path | None, epochs: int) -> Path | None:
    """The plot a trial drew in its last checkpoint, if it covers all ``epochs`` records."""
    if trial_dir is None:
        return None
    drawn = sorted(Path(trial_dir).glob(f"checkpoint_*/{PLOT_FILE}"))
    if not drawn:
        return None
    history = read_history(drawn[-1].parent)
    return drawn[-1] if history is not None and len(history) == epochs else None


def resolved_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's full training config (defaults filled in): rerunnable with mistudy train."""
    return TrainConfig.from_dict(train_config_of(dict(config))).to_dict()


def record_of(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(result[k]) for k in RECORD_KEYS if k in result}




class Tracker:
    """Idempotent MLflow logging for one study. Picklable (the client is made lazily)."""

    def __init__(self, tracking_uri: str, experiment: str, study_id: str,
                 artifact_location: str | None = None, saturation: Mapping[str, Any] | None = None,
                 timings_path: str | None = None, last_k: int = DEFAULT_LAST_K) -> None:
        import logging

        # A failing store (down, disk full) is reported once by the callback, in one line;
        # MLflow's session helper would print every failed statement's traceback.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.study_id = study_id
        self.artifact_location = artifact_location
        self.saturation = dict(saturation or {})
        self.timings_path = timings_path  # where the driver's overhead figures go
        self.last_k = last_k  # epochs averaged into a trial's summary metrics
        self._client: Any = None
        self._runs: dict[str, str] = {}  # tune trial id -> run id
        self._steps: dict[str, set[int]] = {}  # run id -> logged epochs
        self._logged = 0  # trial-epochs logged by this tracker (benchmarks read it)
        # trial plots this process had to draw (0 when every trial drew its own, as it should:
        # drawing costs the driver ~0.3 s a trial)
        self.plots_drawn = 0
        # trial id -> (run id, has params) of the runs already in the store, read once; this
        # process holds the folder's lock, so no one else creates a run of this study meanwhile
        self._known: dict[str, tuple[str, bool]] | None = None
        self._moved: bool | None = None  # the folder copied or moved since the experiment began

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_runs": {}, "_steps": {}, "_logged": 0,
                "plots_drawn": 0, "_known": None, "_moved": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_moved", None)  # a tracker pickled by an older version

    def relocate(self, where: Location) -> None:
        """Restored by Tune from a saved state: the stores are where the restoring command
        found the study (``study._folder.Location``), not where it was when it was saved."""
        if where.study_id == self.study_id:
            self.tracking_uri, self.artifact_location = where.tracking_uri, \
                where.artifact_location
            self.timings_path = where.timings

    @property
    def client(self) -> Any:
        if self._client is None:
            import os

            from mlflow.tracking import MlflowClient

            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
            ensure_mlflow_store(self.tracking_uri)  # a kill mid-migration leaves no half store
            self._client = MlflowClient(tracking_uri=_credentials_to_env(self.tracking_uri))
        return self._client

    # ---- experiment and parent -----------------------------------------------------------
    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made before the tag
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG,
                                               EXPERIMENT_KIND)
            return str(exp.experiment_id)
        return str(self.client.create_experiment(
            self.experiment, artifact_location=self.artifact_location,
            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}))

    def _search(self, extra: str) -> list[Any]:
        flt = f"{study_filter(self.study_id)} and {extra}"
        return search_all_runs(self.client, self.experiment_id(), flt,
                               order_by=["attributes.start_time DESC"])  # newest first

    def parent_run(self, spec_raw: Mapping[str, Any] | None = None) -> str:
        found = self._search(PARENT_RUN)
        if found:
            run_id, has_params = str(found[0].info.run_id), bool(found[0].data.params)
        else:
            run = self.client.create_run(self.experiment_id(),
                                         run_name=f"study {self.experiment}",
                                         tags={TAGS.study_id: self.study_id,
                                               TAGS.role: ROLE_PARENT})
            run_id, has_params = str(run.info.run_id), False
        if spec_raw and not has_params:  # new, or a kill came right after its creation
            self._log_params(run_id, spec_raw)
            self.log_text(run_id, yaml.safe_dump(dict(spec_raw), sort_keys=False), SPEC_FILE)
        return run_id

    def set_experiment_tag(self, key: str, value: str) -> None:
        """A tag on the study's experiment (the shared view the printed link opens)."""
        self.client.set_experiment_tag(self.experiment_id(), key, value)

    def experiment_tags(self) -> dict[str, str]:
        """The study experiment's tags ({} when it does not exist yet)."""
        exp = self.client.get_experiment_by_name(self.experiment)
        return dict(exp.tags) if exp is not None else {}

    def finish_parent(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run(), status=status)

    # ---- trial runs ----------------------------------------------------------------------
    def trial_runs(self) -> dict[str, str]:
        """Tune trial id -> run id for every child run of this study (deleted ones excluded)."""
        runs = self._search(TRIAL_RUNS)
        return {r.data.tags[TAGS.trial_id]: str(r.info.run_id) for r in runs}

    def told_tags(self) -> dict[str, tuple[str | None, str | None]]:
        """Tune trial id -> (what Optuna was told for its configuration, the run's chart
        group): the ``told`` and ``group`` tags of every child run."""
        return {r.data.tags[TAGS.trial_id]: (r.data.tags.get(TAGS.told),
                                             r.data.tags.get(TAGS.group))
                for r in self._search(TRIAL_RUNS)}

    def delete_run(self, run_id: str) -> None:
        """A stray run: one whose trial Tune does not know."""
        self.client.delete_run(run_id)
        self._runs = {t: r for t, r in self._runs.items() if r != run_id}

    def run_state(self, run_id: str) -> tuple[str, set[str]]:
        """(status, names of its metrics) of a run."""
        run = self.client.get_run(run_id)
        return str(run.info.status), set(run.data.metrics)

    def ensure_trial_run(self, trial_id: str, config: Mapping[str, Any],
                         tags: Mapping[str, str] | None = None) -> str:
        if trial_id in self._runs:
            return self._runs[trial_id]
        if self._known is None:  # the study's runs, once: then a new trial costs no search
            self._known = {r.data.tags[TAGS.trial_id]: (str(r.info.run_id),
                                                          bool(r.data.params))
                           for r in self._search(TRIAL_RUNS)}
        if trial_id in self._known:
            run_id, has_params = self._known.pop(trial_id)
        else:
            try:
                run_id = self._create_trial_run(trial_id, config, tags or {})
            except Exception:
                # A server that went down mid-call may have made the run and lost only the
                # answer: the next try reads the store again instead of making a second run.
                self._known = None
                raise
            has_params = False
        if not has_params:  # new, or a kill came between the run's creation and its params
            try:
                self._log_params(run_id, resolved_config(config))
            except Exception:
                self._known[trial_id] = (run_id, False)  # the next try completes this run
                raise
        self._runs[trial_id] = run_id
        return run_id

    def _create_trial_run(self, trial_id: str, config: Mapping[str, Any],
                          tags: Mapping[str, str]) -> str:
        tr = config.get("transition", {})
        baseline = bool(config.get(BASELINE_KEY, False))
        all_tags = {
            "mlflow.parentRunId": self.parent_run(), TAGS.study_id: self.study_id,
            TAGS.role: ROLE_TRIAL, TAGS.trial_id: trial_id,
            TAGS.family: str(tr.get("family", "")), TAGS.baseline: str(baseline).lower(),
            TAGS.dataset: str(config.get("dataset", "")),
            TAGS.model: str(config.get("model", "")),
            TAGS.seed: str(config.get("seed", "")),
            TAGS.batch_size: str(config.get("batch_size", "")),
            TAGS.schedule: schedule_text(config),
            TAGS.group: run_group(schedule_text(config), baseline,
                                  str(config.get(PHASE_KEY) or "search")),
            **({TAGS.optuna_trial: str(config["optuna_trial"])}
               if "optuna_trial" in config else {}),
            **({TAGS.enqueued: "true"} if config.get(ENQUEUED_KEY) else {}),
            TAGS.phase: str(config.get(PHASE_KEY) or "search"),
            **dict(tags),
        }
        run = self.client.create_run(self.experiment_id(), run_name=run_name(config),
                                     tags=all_tags)
        return str(run.info.run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:  # one call for all of them
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_values(self, run_id: str, values: Mapping[str, float],
                   tags: Mapping[str, str] | None = None) -> None:
        """One-number columns (step 0) and tags of a run, in one call. Non-finite values are
        left out, and so is any key named like a per-epoch record key (val_gap, val_ce as an
        objective): it would add a point to that key's epoch history."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items()
                   if math.isfinite(float(v)) and k not in RECORD_KEYS]
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        if metrics or tag_list:
            self.client.log_batch(run_id, metrics=metrics, tags=tag_list)

    def logged_steps(self, run_id: str) -> set[int]:
        if run_id not in self._steps:
            hist = self.client.get_metric_history(run_id, "epoch")
            self._steps[run_id] = {int(m.step) for m in hist}
        return self._steps[run_id]

    def log_records(self, run_id: str, records: Iterable[Mapping[str, Any]]) -> int:
        """Log every record whose epoch the run lacks. A backlog is coalesced: whole epochs,
        as many as fit in one ``log_batch`` (MLflow takes 1,000 metrics a call), so a driver
        that falls behind catches up in few calls. Each call is one transaction in the SQL
        store: an epoch is either wholly there or not. Returns epochs logged."""
        from mlflow.entities import Metric

        done = self.logged_steps(run_id)
        batch: list[Any] = []
        epochs: list[int] = []
        total = 0
        for r in records:
            epoch = int(r["epoch"])
            if epoch in done or epoch in epochs:
                continue
            total += 1
            ts = int(1000 * float(r.get("timestamp", 0))) or 0
            metrics = [Metric(k, float(r[k]), ts, epoch) for k in RECORD_KEYS
                       if k in r and math.isfinite(float(r[k]))]
            if batch and len(batch) + len(metrics) > METRICS_PER_CALL:
                self._log_epochs(run_id, batch, epochs)
                batch, epochs = [], []
            batch += metrics
            epochs.append(epoch)
        if batch:
            self._log_epochs(run_id, batch, epochs)
        return total

    def _log_epochs(self, run_id: str, metrics: list[Any], epochs: list[int]) -> None:
        try:
            self.client.log_batch(run_id, metrics=metrics)
        except Exception:
            # The batch may have landed with only the answer lost (one transaction: whole
            # epochs or none): the next try reads the run's epochs again, else it would log
            # them twice.
            self._steps.pop(run_id, None)
            raise
        self._steps[run_id].update(epochs)
        self._logged += len(epochs)

    def finish_trial(self, run_id: str, records: list[dict[str, Any]], config: Mapping[str, Any],
                     status: str, error: str | None = None,
                     trial_dir: str | Path | None = None) -> None:
        """Artifacts (resolved config, metrics CSV, trajectory PNG) in one upload; summary
        metrics, saturation and error tags in one batch; then the status. The PNG is the one
        the trial drew in its last checkpoint under ``trial_dir``; drawn here only when the
        trial ended early or left none."""
        from mlflow.entities import RunTag

        self.log_records(run_id, records)
        cfg = resolved_config(config)
        for key in ("data_source", "threads"):  # decided inside the trial
            if records and records[-1].get(key) is not None:
                cfg[key] = records[-1][key]
        tags: dict[str, str] = {}
        metrics: list[Any] = []
        if records:
            sat = saturation_epoch([r["mi_y_yhat"] for r in records],
                                   [r["mi_grad_norm"] for r in records], **self._sat_kwargs())
            tags[TAGS.saturation_epoch] = "none" if sat is None else str(sat)
            tags[TAGS.epochs_done] = str(len(records))
            metrics = self._summary(records)
        if error:
            tags[TAGS.error] = error[:4000]
        self._log_artifacts(run_id, records, cfg, trial_dir)
        self.client.log_batch(run_id, metrics=metrics,
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status=status)

    def _summary(self, records: list[dict[str, Any]]) -> list[Any]:
        """Sortable one-number columns: the final gap and test accuracy (mean of the last
        ``last_k`` epochs). Closure columns come from the searcher's tell
        (:meth:`log_objective`) and the ranking's back-fill, both ``trainables.closure``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric("final_gap", last_k_mean(records, "gap", self.last_k), now, 0),
                   Metric("final_test_acc", last_k_mean(records, "test_acc", self.last_k),
                          now, 0)]
        return [m for m in metrics if math.isfinite(m.value)]

    def log_objective(self, per_trial: Mapping[str, Mapping[str, float]], state: str,
                      reason: str) -> None:
        """What the searcher told Optuna about one configuration, on each seed's run: that
        seed's validation values against its matched baseline, the state, any reason."""
        runs = self.trial_runs()
        for trial_id, values in per_trial.items():
            run_id = runs.get(trial_id)
            if run_id is not None:
                self.log_values(run_id, values, {TAGS.told: state,
                                                 **({TAGS.told_reason: reason} if reason
                                                    else {})})

    def _sat_kwargs(self) -> dict[str, Any]:
        return saturation_settings(self.saturation)

    def _log_artifacts(self, run_id: str, records: list[dict[str, Any]],
                       cfg: Mapping[str, Any], trial_dir: str | Path | None) -> None:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / CONFIG_FILE).write_text(yaml.safe_dump(dict(cfg), sort_keys=False),
                                                 encoding="utf-8")
            if records:
                write_metrics(Path(d) / METRICS_FILE, records)
                drawn = _trial_plot(trial_dir, len(records))
                if drawn is not None:
                    shutil.copyfile(drawn, Path(d) / PLOT_FILE)
                else:
                    plot_trial(records, Path(d) / PLOT_FILE, run_name(cfg))
                    self.plots_drawn += 1
            self._put(run_id, Path(d))

    def _local_artifacts(self, run_id: str) -> Path | None:
        """Where a run's artifacts go on this machine when the study's folder was copied or
        moved since the run was made: MLflow's store keeps each run's absolute artifact URI
        (the folder where it began); this folder's own ``mlartifacts/`` holds its files now.
        None: MLflow's own artifact URI is right (not moved, or not a local store)."""
        import urllib.parse

        here = self.artifact_location
        if not here or not here.startswith("file:"):
            return None
        if self._moved is None:  # asked once: the experiment's location says where it began
            exp = self.client.get_experiment(self.experiment_id())
            self._moved = exp.artifact_location.rstrip("/") != here.rstrip("/")
        if not self._moved:
            return None
        mine = Path(urllib.parse.unquote(urllib.parse.urlsplit(here).path))
        parts = urllib.parse.urlsplit(self.client.get_run(run_id).info.artifact_uri)
        segment = f"/{mine.name}/"
        path = urllib.parse.unquote(parts.path)
        if parts.scheme not in ("file", "") or segment not in path or \
                Path(path).is_relative_to(mine):
            return None
        return mine / path.rsplit(segment, 1)[1]

    def _put(self, run_id: str, folder: Path) -> None:
        """The files of ``folder`` as the run's artifacts (into this folder's own store when it
        was copied or moved: :meth:`_local_artifacts`)."""
        target = self._local_artifacts(run_id)
        if target is None:
            self.client.log_artifacts(run_id, str(folder))
            return
        from trainables.fileio import atomic_write_bytes

        target.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            atomic_write_bytes(target / f.name, f.read_bytes())

    def _log_params(self, run_id: str, d: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _safe_params(d).items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_text(self, run_id: str, text: str, name: str) -> None:
        """One text artifact of a run (through :meth:`_put`: a copied folder's own store)."""
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / name).write_text(text, encoding="utf-8")
            self._put(run_id, Path(d))


def study_tracker(study: Study) -> Tracker:
    """This command's tracker (one per command), for the study as the command opened it."""
    meta, spec = study.meta, study.spec
    return Tracker(meta["tracking_uri"], meta["experiment"], meta["study_id"],
                   meta.get("artifact_location"), spec.stopper, str(study.paths.timings),
                   last_k=spec.last_k)
