"""``mistudy ui``: the MLflow UI on a study's store, as a well-behaved server.

It refuses a busy port (exit 2) before starting anything, prints one link that opens the
study's trial runs in chart view, and on SIGTERM or Ctrl-C stops the MLflow server and every
process it started (found through /proc, so a child that made its own session is stopped too).

What the link shows is the study's shared view (:mod:`study._view`).
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

from ._guardian import spawn_tied
from ._procs import alive, descendants, end_pids, listeners
from ._view import SHARE_KEY, TRIAL_FILTER

__all__ = ["runs_link", "port_free", "serve", "local_host", "url_base"]

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


def _stop_tree(proc: subprocess.Popen) -> None:
    tree = [proc.pid, *descendants(proc.pid)]

    def running(p: int) -> bool:
        proc.poll()  # reap the server itself, or it stays a zombie (alive to /proc)
        return alive(p)

    end_pids(tree, grace=10, is_alive=running)
    proc.wait()


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
          log: Path, shared: bool = False, workers: int = 1) -> int:
    """Run the MLflow server until SIGTERM/Ctrl-C; then stop its whole process tree. The
    server's own output goes to ``log``."""
    # One server process (MLflow's default is 4, ~2.8 CPU-s and ~250 MB each to start): the
    # UI of one study for its user; uvicorn still answers the charts' parallel requests from
    # its thread pool. `mistudy ui --workers N` for a UI many people open at once.
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", str(workers)]
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
            theirs = listeners(port) - {proc.pid, *descendants(proc.pid)}
            if theirs and not listeners(port) & {proc.pid, *descendants(proc.pid)}:
                # another server took the port between our check and our server's bind (two
                # `ui --port P` started together): its answer is not ours
                print(f"error: port {port} is taken by another server (PID "
                      f"{', '.join(map(str, sorted(theirs)))}); choose another --port",
                      file=sys.stderr)
                return 2
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
