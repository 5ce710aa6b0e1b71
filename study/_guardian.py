"""Servers we start live no longer than we do.

``spawn_tied(cmd)`` starts ``cmd`` in a new session under a small guardian process (this
module run as ``python -m study._guardian PARENT_PID CMD...``). The guardian asks the kernel
for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``: it arrives even when the parent is
SIGKILLed), and on SIGTERM/SIGINT ends its whole process group -- the server and every worker it
forked (uvicorn workers, job runners, huey consumers) -- first with SIGTERM, then SIGKILL. When
the server exits on its own, the guardian exits with its code.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any

__all__ = ["spawn_tied"]

PR_SET_PDEATHSIG = 1
GRACE_SECONDS = 8.0


def spawn_tied(cmd: list[str], **popen: Any) -> subprocess.Popen:
    """Start ``cmd`` in its own session, ended when this process ends however it ends."""
    guard = [sys.executable, "-m", "study._guardian", str(os.getpid()), *cmd]
    return subprocess.Popen(guard, start_new_session=True, **popen)


def _pdeathsig(sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def _end_group(child: subprocess.Popen) -> None:
    from ._procs import term_then_kill

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group signal reaches us too

    def send(sig: int) -> None:
        if sig == signal.SIGTERM:  # SIGKILL: below, once, for the whole group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(0, sig)

    term_then_kill(send, lambda: child.poll() is not None, GRACE_SECONDS)
    time.sleep(0.5)  # the server's workers end after it
    os.killpg(0, signal.SIGKILL)  # whatever is left, this guardian included


def main(argv: list[str]) -> int:
    parent, cmd = int(argv[0]), argv[1:]
    _pdeathsig(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        return 1
    stop: list[int] = []
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda signum, frame: stop.append(signum))
    child = subprocess.Popen(cmd)
    while not stop and child.poll() is None:
        time.sleep(0.2)
    if stop:
        _end_group(child)
    return child.returncode if child.returncode is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
