"""A study bundle: one small, portable file that anyone can re-rank without the MLflow store.

``mistudy export --bundle FILE`` writes a gzip-compressed tar holding

* ``bundle.json``: format version, the study's name, id and experiment, when it was written;
* ``spec.yaml``: the study's spec as it ran (its ``last_k``, guards and selection metric);
* ``runs.json``: every trial run (search and confirmation phases, baselines included): its
  status, phase, tags, full config and per-epoch records;
* ``optuna.json``: the stored Optuna study's configurations (params, distributions, values,
  the searcher's validation comparison as user attributes);
* ``confirm.json``: the confirmation plan, when the study has one.

``mistudy rank | report | confirm`` take a bundle wherever they take a study folder: the
runs and records become the same tables the MLflow loader builds, so every number is
recomputed by the same code.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import stat
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import yaml

from trainables.records import BASELINE_KEY, RECORD_KEYS, flatten, schedule_text, train_config_of
from trainables.yamlio import safe_load

__all__ = ["Bundle", "is_bundle", "read_bundle", "BUNDLE_VERSION", "bundle_head", "pack_bundle"]

BUNDLE_VERSION = 1
_MEMBERS = ("bundle.json", "spec.yaml", "runs.json", "optuna.json")
MAX_MEMBER_BYTES = 512 * 2**20  # a member larger than this is refused before it is read
# (the findings' 66-run studies: runs.json ~10 MB)
_RUN_KEYS = ("run_id", "status", "study_id", "trial_id", "baseline", "start_time", "phase",
             "enqueued", "pruned", "optuna_trial", "config")  # optuna_trial: None before it


MAX_BUNDLE_BYTES = 1 << 30  # compressed, and decompressed: more is not a study


class _Bounded:
    """A read-only stream that stops with an error after ``MAX_BUNDLE_BYTES`` bytes: a small
    bundle that decompresses into gigabytes (a "bomb") is refused within a second or so."""

    def __init__(self, inner: Any, path: Path) -> None:
        self.inner, self.path, self.seen = inner, path, 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n if n is not None and n >= 0 else MAX_BUNDLE_BYTES + 1)
        self.seen += len(data)
        if self.seen > MAX_BUNDLE_BYTES:
            from ._errors import AnalysisError

            raise AnalysisError(f"{self.path} decompresses to more than "
                                f"{MAX_BUNDLE_BYTES / 2**20:.0f} MiB -- not a study bundle")
        return bytes(data)

    def __enter__(self) -> _Bounded:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.inner.close()


class Bundle(NamedTuple):
    meta: dict[str, Any]
    spec_text: str
    data: Any  # StudyData
    optuna: list[dict[str, Any]]
    confirm: dict[str, Any] | None


def is_bundle(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and tarfile.is_tarfile(p)


def _clean(v: Any) -> Any:
    """JSON has no NaN: None stands for it."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return _clean(v.item())
    return v


def _runs_payload(data: Any) -> list[dict[str, Any]]:
    groups = dict(tuple(data.history.groupby("run_id"))) if not data.history.empty else {}
    keys = [k for k in RECORD_KEYS if k in data.history.columns]
    runs = []
    for row in data.runs.to_dict("records"):
        h = groups.get(row["run_id"])
        records = [] if h is None else [
            {k: _clean(r[k]) for k in keys} for r in h.sort_values("epoch").to_dict("records")]
        runs.append({**{k: _clean(row.get(k)) for k in _RUN_KEYS}, "records": records})
    return runs


def _optuna_payload(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from optuna.distributions import distribution_to_json

    return [{**{k: t[k] for k in ("number", "state", "params", "values")},
             "user_attrs": json.loads(json.dumps(t["user_attrs"], default=_clean)),
             "distributions": {p: distribution_to_json(d)
                               for p, d in t["distributions"].items()}}
            for t in trials]


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    raw = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(raw), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(raw))


def bundle_head(meta: dict[str, Any]) -> dict[str, Any]:
    return {"format": "mistudy-bundle", "version": BUNDLE_VERSION,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **{k: meta.get(k) for k in ("name", "study_id", "experiment", "optuna_study",
                                        "created")},
            "machine": machine_text()}


def pack_bundle(head: dict[str, Any], spec_text: str, data: Any,
                trials: list[dict[str, Any]], confirm_text: str | None) -> bytes:
    """The bundle's bytes (a gzip-compressed tar, members in memory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        _add(tar, "bundle.json", json.dumps(head, indent=1))
        _add(tar, "spec.yaml", spec_text)
        _add(tar, "runs.json", json.dumps(_runs_payload(data), separators=(",", ":")))
        _add(tar, "optuna.json", json.dumps(_optuna_payload(trials)))
        if confirm_text is not None:
            _add(tar, "confirm.json", confirm_text)
    return buf.getvalue()


def machine_text() -> str:
    """The machine the bundle was written on (where the study ran, as a rule)."""
    import os
    import platform

    from trainables.fileio import cpu_model

    model = cpu_model()
    return f"{os.cpu_count()} CPUs ({model or platform.machine()}), {platform.system()}, " \
           f"Python {platform.python_version()}"


def _read_members(path: Path) -> dict[str, str]:
    from ._errors import AnalysisError

    wanted = (*_MEMBERS, "confirm.json")
    try:
        st = os.stat(path)  # never opened unless a regular file: a FIFO would block
        if not stat.S_ISREG(st.st_mode):
            raise AnalysisError(f"{path} is not a regular file (a FIFO, socket, device or "
                                "folder); a bundle is a .tar.gz file")
        if st.st_size > MAX_BUNDLE_BYTES:
            raise AnalysisError(f"{path} is {st.st_size / 2**20:.0f} MiB -- allowed: at most "
                                f"{MAX_BUNDLE_BYTES / 2**20:.0f} MiB")
        with open(path, "rb") as raw, _Bounded(gzip.GzipFile(fileobj=raw), path) as gz, \
                tarfile.open(fileobj=gz, mode="r|") as tar:  # type: ignore[call-overload]
            out: dict[str, str] = {}
            for m in tar:
                core = all(k in out for k in _MEMBERS)
                if core and m.name != "confirm.json":
                    break  # what follows the members a bundle writes is never decompressed
                if m.name not in wanted or not m.isfile():
                    continue  # only the members a bundle has, read into memory (never extracted)
                if m.name in out:
                    raise AnalysisError(f"{path}: member {m.name} appears twice")
                if m.size > MAX_MEMBER_BYTES:
                    raise AnalysisError(f"{path}: member {m.name} holds {m.size / 2**20:.0f} "
                                        f"MiB -- allowed: at most "
                                        f"{MAX_MEMBER_BYTES / 2**20:.0f} MiB per member")
                f = tar.extractfile(m)
                if f is not None:
                    out[m.name] = f.read(MAX_MEMBER_BYTES + 1).decode("utf-8")
                if core:
                    break  # confirm.json, the last member a bundle writes
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"{path} is no readable study bundle ({type(exc).__name__})"
                            ) from None
    missing = [m for m in _MEMBERS if m not in out]
    if missing:
        raise AnalysisError(f"{path} is no study bundle: it lacks {missing}")
    return out


def _runs_frame(runs: list[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in runs:
        config = dict(r["config"] or {})
        row = {k: r.get(k) for k in _RUN_KEYS}
        row["schedule"] = schedule_text({**config, BASELINE_KEY: bool(r["baseline"])})
        row.update({f"p.{k}": v for k, v in flatten(config).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _history(runs: list[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{"run_id": r["run_id"], **{k: (math.nan if v is None else v)
                                        for k, v in rec.items()}}
            for r in runs for rec in r["records"]]
    if not rows:
        return pd.DataFrame(columns=["run_id", *RECORD_KEYS])
    df = pd.DataFrame(rows)
    df["epoch"] = df["epoch"].astype(int)
    return df.sort_values(["run_id", "epoch"]).reset_index(drop=True)


def _shape_problem(head: Any, runs: Any, trials: Any, confirm: Any) -> str | None:
    """What in a bundle's members is not the shape ``export --bundle`` writes, else None."""
    if not isinstance(head, dict):
        return "bundle.json is not an object"
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        return "runs.json is not a list of runs"
    for r in runs:
        problem = _run_problem(r)
        if problem:
            return f"run {str(r.get('run_id'))[:40]!r} {problem}"
    if not isinstance(trials, list) or not all(
            isinstance(t, dict) and isinstance(t.get("distributions"), dict) for t in trials):
        return "optuna.json is not a list of trials"
    return None if confirm is None else confirm_problem(confirm)


def _run_problem(run: dict[str, Any]) -> str | None:
    """What in one run of ``runs.json`` is not what a trial records: its config must be one a
    trial accepts (``TrainConfig``'s own rules: a config ``{}`` or without a transition was a
    ``KeyError`` in ``rank``), each record a mapping with an integer epoch and numbers (or
    null) for the metrics (a ``val_gap`` of ``"abc"`` was a ``ValueError``)."""
    from trainables.config import ConfigError, TrainConfig

    config, records = run.get("config"), run.get("records")
    if not isinstance(config, dict) or not isinstance(records, list):
        return "has no config or records"
    try:
        TrainConfig.from_dict(train_config_of(config))  # less the keys a study adds
    except ConfigError as exc:
        return f"has a config no trial runs ({str(exc)[:160]})"
    if "transition" not in config:
        return "has a config without a transition"
    for rec in records:
        if not isinstance(rec, dict) or not isinstance(rec.get("epoch"), int) \
                or isinstance(rec["epoch"], bool):
            return "has a record without an integer epoch"
        bad = next((k for k in RECORD_KEYS if k != "epoch" and rec.get(k) is not None
                    and (isinstance(rec[k], bool) or not isinstance(rec[k], (int, float)))),
                   None)
        if bad is not None:
            return f"has {bad}={rec[bad]!r:.40} at epoch {rec['epoch']} (a number " \
                   "or null is allowed)"
    return None


def confirm_problem(plan: Any) -> str | None:
    """Whether a confirmation plan has the shape the tables read (``study._confirm`` checks
    the rest before running one)."""
    ok = isinstance(plan, dict) and isinstance(plan.get("metric"), str) and all(
        isinstance(plan.get(k), list) for k in ("schedules", "seeds")) and all(
        isinstance(x, dict) and isinstance(x.get("schedule"), str) for x in plan["schedules"])
    return None if ok else "confirm.json is not a confirmation plan"


def read_bundle(path: str | Path) -> Bundle:
    from optuna.distributions import json_to_distribution

    from ._errors import AnalysisError, StudyData

    members = _read_members(Path(path))
    try:
        head = json.loads(members["bundle.json"])
        runs = json.loads(members["runs.json"])
        raw_trials = json.loads(members["optuna.json"])
        confirm = json.loads(members["confirm.json"]) if "confirm.json" in members else None
        spec = safe_load(members["spec.yaml"], "spec.yaml")  # safe: a !!python tag is refused
        problem = _shape_problem(head, runs, raw_trials, confirm) or (
            None if isinstance(spec, dict) else "spec.yaml is not a mapping")
        if problem:
            raise AnalysisError(f"{path} is a damaged study bundle: {problem}")
        if head.get("format") != "mistudy-bundle" or head.get("version") != BUNDLE_VERSION:
            raise AnalysisError(f"{path}: bundle format {head.get('format')!r} version "
                                f"{head.get('version')!r}; this mistudy reads version "
                                f"{BUNDLE_VERSION}")
        trials = [{**t, "distributions": {p: json_to_distribution(d)
                                          for p, d in t["distributions"].items()}}
                  for t in raw_trials]
        data = StudyData("bundle", str(head.get("experiment") or head.get("name")),
                         f"bundle:{Path(path).resolve()}", _runs_frame(runs), _history(runs),
                         None)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError,
            yaml.YAMLError) as exc:
        raise AnalysisError(f"{path} is a damaged study bundle ({type(exc).__name__}: "
                            f"{str(exc)[:200]})") from None
    return Bundle(head, members["spec.yaml"], data, trials, confirm)
