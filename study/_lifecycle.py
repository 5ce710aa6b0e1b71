"""How a study run ends: done, or stopped by a signal with its state saved and resumable.

* SIGINT (Ctrl-C), SIGTERM (a cluster scheduler) and SIGHUP (a closed terminal) all stop the
  study the same way: Tune's own Ctrl-C path saves the experiment state and returns, the store
  is synced (finished epochs logged; runs of unfinished trials marked KILLED, never FINISHED;
  the parent run KILLED), and the command exits ``128 + signal`` (130, 143, 129) with one line
  saying how to continue. SIGTERM and SIGHUP are turned into SIGINT so Tune's handler, not
  Ray's C++ one (which aborts with exit 134), sees them.
* A previous run's local Ray (a driver killed with SIGKILL leaves its Ray processes behind
  for a minute, trials still running) is ended before a new run of the same folder starts
  its own: :func:`end_previous_ray`. Only processes proven to be that Ray are ended: listed
  in ``ray-pids.json`` with the start time they had when it was written, by a driver of this
  very folder (the folder's device and inode, so a copy of a running study never ends the
  original's Ray, and a moved folder still ends its own), and the processes under them.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from trainables.studyfolder import StudyPaths

from ._procs import cmdline, descendants, end_pids, start_time

__all__ = ["StudyInterrupted", "install_stop_signals", "stop_signal", "exit_code",
           "record_ray_processes", "end_previous_ray"]

_received: list[int] = []


class StudyInterrupted(RuntimeError):
    """The study stopped before its trials finished; its state is saved."""


def stop_signal() -> int | None:
    """The stop signal received by this process, if any."""
    return _received[0] if _received else None


def exit_code() -> int:
    return 128 + (stop_signal() or signal.SIGINT)


def _as_sigint(signum: int, frame: Any) -> None:
    if signum not in _received:
        _received.append(signum)
    os.kill(os.getpid(), signal.SIGINT)


def install_stop_signals() -> None:
    """SIGTERM and SIGHUP act like Ctrl-C (main thread only; call again after Ray starts,
    which may install handlers of its own)."""
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _as_sigint)


def _ray_tree(root: int) -> list[int]:
    return [p for p in descendants(root) if _is_ray(p)]


def _is_ray(pid: int) -> bool:
    return b"ray" in cmdline(pid)


def _folder_id(folder: Path) -> list[int]:
    st = Path(folder).stat()
    return [st.st_dev, st.st_ino]


def record_ray_processes(paths: StudyPaths) -> None:
    """The local Ray this driver started, in the study folder: each PID with its start time,
    and the folder's identity (``trainables.fileio.atomic_write_text``: never through a
    link)."""
    from trainables.fileio import atomic_write_text

    pids = _ray_tree(os.getpid())
    record = {"driver": os.getpid(), "folder": _folder_id(paths.root),
              "ray": [[p, start_time(p)] for p in pids]}
    try:
        atomic_write_text(paths.ray_pids, json.dumps(record))
    except PermissionError:
        pass  # a read-only folder cannot be resumed anyway; nothing to clean up later


def _proven(folder: Path, old: Any) -> list[int]:
    """The recorded Ray processes still alive as the same processes, when the record is this
    folder's own (empty for a record of another shape: an older version's, or a hand-made
    one -- then nothing is ended)."""
    if not isinstance(old, dict) or old.get("folder") != _folder_id(folder):
        return []
    out = []
    for item in old.get("ray") or []:
        if isinstance(item, list) and len(item) == 2 and all(isinstance(v, int) for v in item):
            pid, started = item
            if pid != os.getpid() and start_time(pid) == started and _is_ray(pid):
                out.append(pid)
    return out


def end_previous_ray(paths: StudyPaths, grace: float = 10.0) -> list[int]:
    """End what is left of the local Ray a previous, killed driver of this folder started
    (and the trial processes under it); returns the PIDs it ended."""
    from trainables.fileio import check_target

    path = paths.ray_pids
    check_target(path)  # a link is refused, never read or removed through
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    alive = _proven(paths.root, old)
    alive += [c for p in alive for c in _ray_tree(p)]
    alive = sorted(set(alive) - {os.getpid()})
    end_pids(alive, grace, is_alive=_is_ray)
    path.unlink(missing_ok=True)
    return alive
