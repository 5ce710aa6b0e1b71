"""Processes, the one room that reads ``/proc`` and ends processes: who a PID is (alive, its
start time, its command line, its children) and the TERM-then-KILL rule the UI server, the
local Ray of a killed driver and the guardian of a tied child all end by. Linux only: elsewhere
a PID has no children and no start time (nothing is ended on a guess)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["alive", "start_time", "cmdline", "descendants", "term_then_kill", "end_pids",
           "listeners"]


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state is the first)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Running or sleeping: not gone, not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot; with the PID, who it is)."""
    fields = _stat(pid)
    try:
        return None if fields is None else int(fields[19])
    except (ValueError, IndexError):
        return None


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a child that made its own session included)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        try:
            ppid = int(fields[1]) if fields else None
        except (ValueError, IndexError):
            ppid = None
        if ppid is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def term_then_kill(send: Callable[[int], None], done: Callable[[], bool], grace: float,
                   step: float = 0.1) -> None:
    """The one ending rule: ``send(SIGTERM)``, wait up to ``grace`` seconds for ``done()``,
    then ``send(SIGKILL)`` if it is not."""
    send(signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and not done():
        time.sleep(step)
    if not done():
        send(signal.SIGKILL)


def end_pids(pids: Iterable[int], grace: float,
             is_alive: Callable[[int], bool] = alive) -> None:
    """End ``pids`` by :func:`term_then_kill` (a PID already gone is skipped)."""
    pids = list(pids)

    def send(sig: int) -> None:
        for p in pids:
            if is_alive(p):
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass

    term_then_kill(send, lambda: not any(is_alive(p) for p in pids), grace)


def listeners(port: int) -> set[int]:
    """The PIDs holding a listening TCP socket on ``port`` (IPv4 or IPv6), from
    ``/proc/net/tcp{,6}`` (state 0A) and each process's socket fds; those of other users
    stay unknown (their fds are not readable)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                found.add(int(proc.name))
                break
    return found

