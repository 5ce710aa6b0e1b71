"""A study folder's rules, shared by every package (torch-free, Ray-free): its layout (the one
place that names its files), where its MLflow store and artifacts are, wherever the folder is
now, and how credentials in a tracking URI are kept out of every printed or logged URL.

Study folder (``--out DIR``)::

    DIR/study.json     study id, name, tracking URI ("folder" = DIR/mlflow.db), experiment
    DIR/spec.yaml      the spec as run (``--resume`` reads it)
    DIR/mlflow.db      default tracking store (SQLite); artifacts in DIR/mlartifacts
    DIR/optuna.db      the sampler's history
    DIR/ray/<name>/    Tune's experiment: per-trial results, checkpoints, searcher state
    DIR/confirm.json   the confirmation plan, once ``mistudy confirm`` made one
    DIR/timings.json   the driver's overhead figures
    DIR/.lock          held by the one process writing the folder (run, --resume, sync)
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .locks import LOCK_FILE
from .records import SPEC_FILE

__all__ = ["StudyPaths", "FOLDER_STORE", "tracking_uri_of", "split_credentials",
           "credentials_to_env", "storage_failure",
           "sqlite_path", "sqlite_uri", "sqlite_problem", "damaged_database", "SQLITE_PREFIX",
           "NAME_PATTERN", "NAME_RULE",
           "is_study_name", "redact", "tracking_problem", "optuna_study_name"]

# A study's name becomes a folder (ray/NAME) and file names (findings' NAME-tables.md): a name,
# never a path. The one rule for the spec, the folder and a bundle's recorded name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = ("letters, digits, '.', '_', '-' (at most 100, not starting with '.' or '-'): "
             "the name is a folder")


def is_study_name(value: Any) -> bool:
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None

FOLDER_STORE = "folder"  # study.json's tracking_uri for the folder's own DIR/mlflow.db
SQLITE_PREFIX = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (None for other stores and for an
    in-memory or path-less one): the one SQLite URI parser."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    rest = uri[len(SQLITE_PREFIX):].split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


def sqlite_uri(path: Path) -> str:
    """The ``sqlite:///`` URI of a database file (its absolute path): the one builder, so
    every command that opens a study's ``mlflow.db`` or ``optuna.db`` has it checked first
    (:func:`sqlite_problem`; raises ``fileio.UnreadableFile``, one line naming the file)."""
    from .fileio import UnreadableFile

    problem = sqlite_problem(Path(path))
    if problem:
        raise UnreadableFile(problem)
    return f"{SQLITE_PREFIX}{Path(path).resolve()}"


_SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_problem(path: Path) -> str | None:
    """Why ``path`` is no SQLite database a store can open, from its 100-byte header alone
    (no SQLite call: a FIFO would block one, and a damaged file surfaced as a SQLAlchemy
    ``DatabaseError`` traceback deep in MLflow or Optuna); None when it is sound or absent.
    Seen here: a folder, FIFO or device in its place; bytes that are not SQLite's (garbage,
    another file copied over it); a file cut shorter than the pages its header counts (an
    interrupted copy). The size is not judged while a ``-journal`` or ``-wal`` file is beside
    it: a writer (or SQLite's own recovery) may be mid-way, and SQLite checks it then."""
    import stat as st

    try:
        info = path.stat()
    except FileNotFoundError:
        return None  # a store not made yet
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if not st.S_ISREG(info.st_mode):
        return f"{path}: not a regular file (a FIFO, folder or device) -- a SQLite database is"
    if info.st_size == 0:
        return None  # SQLite's own empty database
    with path.open("rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        return f"{path}: not a SQLite database (damaged, or another file in its place)"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    counted = pages > 0 and head[24:28] == head[92:96]  # SQLite's rule for the count's validity
    busy = any(path.with_name(path.name + tail).exists() for tail in ("-journal", "-wal"))
    if counted and not busy and info.st_size < page * pages:
        return f"{path}: cut short ({info.st_size} of its {page * pages} bytes) -- restore " \
               "it from a copy"
    return None


def optuna_study_name(meta: dict[str, Any]) -> str:
    """The Optuna study's name in ``optuna.db``, from a folder's ``study.json``: the spec's
    name (folders made before that used the study id)."""
    return str(meta.get("optuna_study") or meta["study_id"])


@dataclass(frozen=True)
class StudyPaths:
    """Where each file of the study folder ``root`` is."""

    root: Path
    MLFLOW_DB = "mlflow.db"
    OPTUNA_DB = "optuna.db"
    ARTIFACTS = "mlartifacts"

    @property
    def meta(self) -> Path:
        return self.root / "study.json"

    def is_study(self) -> bool:
        """Whether ``root`` is a study folder (its study.json marks it)."""
        return self.meta.is_file()

    @property
    def spec(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    @property
    def confirm_plan(self) -> Path:
        return self.root / "confirm.json"

    @property
    def pruning(self) -> Path:
        """The closure-aware pruner's decisions (``scheduler: closure``): kept across kills."""
        return self.root / "pruning.json"

    @property
    def confirm_report(self) -> Path:
        return self.root / "confirm.md"

    @property
    def lock(self) -> Path:
        """Held by the one command writing the folder (``trainables.locks``)."""
        return self.root / LOCK_FILE

    @property
    def ray_pids(self) -> Path:
        """The local Ray's processes, with their start times (``study._lifecycle``)."""
        return self.root / "ray-pids.json"

    @property
    def ui_log(self) -> Path:
        """``mistudy ui``'s server log."""
        return self.root / "mlflow-ui.log"

    @property
    def optuna_db(self) -> Path:
        return self.root / self.OPTUNA_DB

    @property
    def optuna(self) -> str:
        return sqlite_uri(self.optuna_db)

    def default_tracking_uri(self) -> str:
        return sqlite_uri(self.root / self.MLFLOW_DB)

    def artifacts(self) -> str:
        return (self.root / self.ARTIFACTS).resolve().as_uri()

    def relocated(self, artifact: Path) -> Path | None:
        """``artifact``, a file under the artifacts folder of wherever the folder was made, in
        this folder's own artifacts folder (a copied or moved folder), when it is there."""
        segment = f"/{self.ARTIFACTS}/"
        if segment not in artifact.as_posix():
            return None
        here = self.root / self.ARTIFACTS / artifact.as_posix().rsplit(segment, 1)[1]
        return here if here.is_file() else None


def _moved(uri: str, root: Path, name: str) -> str | None:
    """A study.json from before relative stores names an absolute file in the folder it was
    made in; if this folder holds a file of that name, the folder was copied or moved."""
    path = sqlite_path(uri)
    if path is not None and path.name == name:
        here = (root / name).resolve()
        if here.exists() and path != here:
            return sqlite_uri(here)
    return None


def tracking_uri_of(meta: dict[str, Any], root: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location) of the study in ``root``, wherever ``root`` is now."""
    uri, art = meta["tracking_uri"], meta.get("artifact_location")
    paths = StudyPaths(root)
    if uri == FOLDER_STORE:
        return paths.default_tracking_uri(), paths.artifacts()
    moved = _moved(uri, root, StudyPaths.MLFLOW_DB)
    if moved:
        return moved, paths.artifacts()
    return uri, art


def split_credentials(uri: str) -> tuple[str, str | None, str]:
    """``http://user:pw@host/p`` -> (``http://host/p``, user, pw); (uri, None, "") otherwise."""
    import urllib.parse

    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.username is None:
        return uri, None, ""
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    bare = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return (bare, urllib.parse.unquote(parts.username),
            urllib.parse.unquote(parts.password or ""))


def credentials_to_env(uri: str) -> str:
    """The URI without credentials; these go to MLflow's own environment variables, so no URL
    MLflow prints or logs can carry them."""
    import os

    bare, user, password = split_credentials(uri)
    if user is not None:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", user)
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", password)
    return bare


# A full disk or read-only file system, as each layer says it: errno where an OSError is raised,
# the message where SQLite (under MLflow or Optuna) or pyarrow (Ray's storage) re-words it.
_STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
                   errno.EDQUOT: "the disk quota is exceeded"}
_STORAGE_TEXTS = {"database or disk is full": "the disk is full",
                  "no space left on device": "the disk is full",
                  "attempt to write a readonly database": "the file system is read-only",
                  "read-only file system": "the file system is read-only"}


def storage_failure(exc: BaseException) -> tuple[str, str | None] | None:
    """(what, file or None) when ``exc`` -- or anything in its cause/context chain -- is a
    full disk or a read-only file system: failures that waiting does not cure."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        why = _STORAGE_ERRNOS.get(getattr(cur, "errno", None) or -1)
        text = str(cur).lower()
        why = why or next((v for k, v in _STORAGE_TEXTS.items() if k in text), None)
        if why:
            return why, getattr(cur, "filename", None)
        cur = cur.__cause__ or cur.__context__
    return None


def damaged_database(exc: BaseException, folder: Path | None) -> str | None:
    """One line when ``exc`` -- or anything in its cause/context chain -- is SQLite saying a
    database is damaged past its header (``database disk image is malformed``, ``file is not a
    database``), else None. It names the damaged file when ``folder`` is a study folder (each
    store asked ``PRAGMA quick_check`` read-only, here on the error path only)."""
    import sqlite3

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, sqlite3.DatabaseError) and getattr(
                cur, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            break
        cur = cur.__cause__ or cur.__context__
    else:
        return None
    if cur is None:
        return None
    paths = StudyPaths(folder) if folder is not None else None
    files = [paths.root / StudyPaths.MLFLOW_DB, paths.optuna_db] if paths else []
    named = [f for f in files if f.is_file() and not _sound(f)]
    which = ", ".join(str(f) for f in named) or "a study database (mlflow.db or optuna.db)"
    return f"{which}: damaged (SQLite: {cur}) -- restore it from a copy"


def _sound(path: Path) -> bool:
    import sqlite3

    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            return bool(db.execute("PRAGMA quick_check").fetchone()[0] == "ok")
    except sqlite3.Error:
        return False


def redact(uri: str) -> str:
    """``http://user:secret@host`` -> ``http://***@host``: never print credentials (the
    host starts after the last ``@``: a password may hold one)."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            return f"{scheme}://***@{authority.rsplit('@', 1)[1]}{slash}{path}"
    return uri


def tracking_problem(uri: str, timeout: float = 5.0) -> str | None:
    """Why a tracking server cannot be reached now (one line, credentials redacted), else
    None; asked before anything starts (MLflow's client would retry for minutes)."""
    if uri.split(":", 1)[0].split("+")[0] in ("postgresql", "mysql", "mssql"):
        return _driver_problem(uri)
    if not uri.startswith(("http://", "https://")):
        return None
    import base64
    import urllib.request

    bare, user, password = split_credentials(uri)
    request = urllib.request.Request(bare.rstrip("/") + "/health")
    if user is not None:  # credentials in the URI go in a header, never printed
        cred = f"{user}:{password}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(cred).decode())
    try:
        urllib.request.urlopen(request, timeout=timeout).read()
    except Exception as exc:
        return (f"tracking URI {redact(uri)} is unreachable ({type(exc).__name__}); start "
                f"the server or fix --tracking-uri")
    return None


def _driver_problem(uri: str) -> str | None:
    """A database store's Python driver missing (MLflow would fail after Ray started)."""
    try:
        from sqlalchemy.engine import make_url

        make_url(uri).get_dialect().import_dbapi()
    except ModuleNotFoundError as exc:
        return (f"tracking URI {redact(uri)} needs the database driver {exc.name!r}, which is "
                f"not installed: pip install it (psycopg2-binary for PostgreSQL's default)")
    except Exception as exc:
        return f"tracking URI {redact(uri)} is not a database URL SQLAlchemy reads ({exc})"
    return None
