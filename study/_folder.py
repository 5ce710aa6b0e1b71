"""The study folder: its ``study.json``, its one writer, and the tracking URI (its layout is
``trainables.studyfolder.StudyPaths``).

Everything that validates or normalizes a name, a path or a URI lives here and runs before
anything is written. A folder is self-contained: its default store is named relative to the
folder (``"tracking_uri": "folder"``), so a copied or moved folder works on its own store.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from trainables.fileio import UnreadableFile, atomic_write_text, read_regular_text
from trainables.locks import LOCK_FILE, FolderLocked, folder_lock
from trainables.studyfolder import (
    FOLDER_STORE,
    StudyPaths,
    optuna_study_name,
    redact,
    sqlite_path,
    sqlite_uri,
    tracking_problem,
    tracking_uri_of,
)
from trainables.yamlio import MAX_BYTES, YamlLimitError, safe_load

from .spec import SpecError, StudySpec, parse_spec

__all__ = ["StudyError", "Study", "open_study", "study_paths", "new_meta", "Location",
           "location_of",
           "normalize_tracking_uri", "check_tracking", "record_timings", "writer_lock",
           "prepare_folder", "MAX_META_BYTES"]

TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


class StudyError(RuntimeError):
    """A study-level problem for the user (exit code 2)."""


class Location(NamedTuple):
    """Where this command's study lives: the folder as the command line names it, and the
    stores resolved for it. Tune restores the searcher, the pruner and the tracker from
    pickles and JSON written when the folder may have been elsewhere; the command that
    restores them hands them this value (``relocate``), so a copied folder writes into itself
    and a moved one never recreates its old path."""

    root: str
    optuna: str  # the Optuna store's URI
    optuna_study: str
    study_id: str
    tracking_uri: str
    artifact_location: str | None
    timings: str
    pruning: str  # the closure pruner's decisions file
    ray: str  # Tune's experiments


def location_of(paths: StudyPaths, meta: dict[str, Any]) -> Location:
    """The study's :class:`Location` (``meta``'s tracking URI resolved for where it is)."""
    return Location(str(paths.root.resolve()), paths.optuna, optuna_study_name(meta),
                    str(meta["study_id"]), meta["tracking_uri"], meta.get("artifact_location"),
                    str(paths.timings), str(paths.pruning.resolve()), str(paths.ray.resolve()))


def study_paths(out: Path | str) -> StudyPaths:
    """The layout of the folder a command names (``--out``, ``STUDY``): built once, by the
    command, and handed down with the study (:class:`Study`); nothing below rebuilds it."""
    return StudyPaths(Path(out))


class Study(NamedTuple):
    """A study folder as its command opened it, once: everything below the command reads the
    study from here, never the folder's files again."""

    paths: StudyPaths
    meta: dict[str, Any]  # study.json, its tracking URI resolved for where the folder is now
    spec: StudySpec  # spec.yaml as stored

    @property
    def optuna_name(self) -> str:
        return optuna_study_name(self.meta)

    @property
    def where(self) -> Location:
        """What restored objects are handed (``relocate``)."""
        return location_of(self.paths, self.meta)


def normalize_tracking_uri(uri: str) -> str:
    """A supported, absolute tracking URI, or :class:`StudyError` (one line, nothing written).
    A relative ``sqlite:///rel/x.db`` is made absolute now, against the current folder, so
    later commands from other folders find the same store."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.split("+")[0] not in TRACKING_SCHEMES:
        raise StudyError(f"--tracking-uri {redact(uri)!r}: scheme {parts.scheme or '(none)'!r} "
                         f"is not supported; allowed: {', '.join(TRACKING_SCHEMES)} "
                         f"(e.g. http://127.0.0.1:5000 or sqlite:///path/mlflow.db)")
    if parts.scheme in ("http", "https") and not parts.hostname:
        raise StudyError(f"--tracking-uri {redact(uri)!r} has no host")
    if parts.scheme == "sqlite":
        path = sqlite_path(uri)
        if path is None:
            raise StudyError(f"--tracking-uri {uri!r}: an SQLite store needs a file path, "
                             f"e.g. sqlite:///path/mlflow.db")
        return sqlite_uri(path)
    return uri


def check_tracking(uri: str) -> None:
    """Fail fast (exit 2, nothing started) when the tracking server cannot be reached."""
    problem = tracking_problem(uri)
    if problem:
        raise StudyError(problem)


def new_meta(spec: StudySpec, tracking_uri: str | None) -> dict[str, Any]:
    return {
        "study_id": uuid.uuid4().hex[:12], "name": spec.name, "experiment": spec.name,
        # the stored Optuna study's name: readable in optuna-dashboard (older folders: the id)
        "optuna_study": spec.name,
        "tracking_uri": normalize_tracking_uri(tracking_uri) if tracking_uri else FOLDER_STORE,
        "artifact_location": None if tracking_uri else FOLDER_STORE,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


MAX_META_BYTES = 1 << 20  # study.json and timings.json: a few hundred bytes when sound


def open_study(paths: StudyPaths) -> Study:
    """The study in ``paths``: its meta (with the tracking URI resolved for where the folder is
    now) and spec; :class:`StudyError` in one line when either is missing or unreadable."""
    out = paths.root
    if not (paths.meta.exists() or paths.meta.is_symlink()):
        raise StudyError(f"{out} is not a study folder (no study.json); run one with "
                         f"mistudy run SPEC --out {out}")
    try:
        meta = json.loads(read_regular_text(paths.meta, MAX_META_BYTES))
        meta["tracking_uri"], meta["artifact_location"] = tracking_uri_of(meta, out)
        spec = parse_spec(safe_load(read_regular_text(paths.spec, MAX_BYTES), str(paths.spec)))
    except UnreadableFile as exc:  # a FIFO, a link, a folder, too large: named, never waited on
        raise StudyError(str(exc)) from None
    except (OSError, ValueError, KeyError, TypeError, YamlLimitError) as exc:
        what = exc.problems[0] if isinstance(exc, SpecError) else type(exc).__name__
        raise StudyError(f"{out}: study.json or spec.yaml is damaged ({what}); the runs "
                         f"themselves are under {paths.ray}") from None
    return Study(paths, meta, spec)


def record_timings(path: Path | str, values: dict[str, Any]) -> None:
    """Merge ``values`` into the study's ``timings.json`` (the driver's overhead figures)."""
    p = Path(path)
    try:
        data = json.loads(read_regular_text(p, MAX_META_BYTES))
    except (OSError, ValueError):  # absent, damaged or no regular file: written anew
        data = {}
    data.update(values)
    atomic_write_text(p, json.dumps(data, indent=2))  # whole or not at all (a full disk)


def prepare_folder(out: Path) -> None:
    """Make ``out`` a folder, or one line saying why it cannot be one."""
    if out.exists() and not out.is_dir():
        raise StudyError(f"--out {str(out)!r} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyError(f"--out {str(out)!r} cannot be made a folder ({exc.strerror})") from None


@contextmanager
def writer_lock(paths: StudyPaths) -> Iterator[None]:
    """The study folder's one writer (``run``, ``--resume``, ``sync``): a second process is
    refused at once, naming the holder's PID; a killed holder leaves no stale lock. A folder
    this call created is removed again if the body fails before writing anything into it."""
    out = paths.root
    created = not out.exists()
    prepare_folder(out)
    try:
        with folder_lock(out, "study folder"):
            try:
                yield
            except BaseException:
                if created and {p.name for p in out.iterdir()} <= {LOCK_FILE}:
                    paths.lock.unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        out.rmdir()
                raise
    except FolderLocked as exc:
        raise StudyError(str(exc)) from None


def write_new_study(paths: StudyPaths, spec: StudySpec, meta: dict[str, Any]) -> None:
    """spec.yaml, then study.json (its presence marks a study), each atomically."""
    write_spec(paths, spec)
    atomic_write_text(paths.meta, json.dumps(meta, indent=2))


def write_spec(paths: StudyPaths, spec: StudySpec) -> None:
    """The spec as run, atomically (``--trials N`` rewrites it before the extension runs)."""
    import yaml

    atomic_write_text(paths.spec, yaml.safe_dump(spec.raw, sort_keys=False))
