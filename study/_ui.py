"""``mistudy ui``: the MLflow UI on a study's store, as a well-behaved server.

It refuses a busy port (exit 2) before starting anything, prints one link that opens the
study's trial runs in chart view sorted by gap closure, and on SIGTERM or Ctrl-C stops the
MLflow server and every process it started (found through /proc, so a child that made its own
session is stopped too).
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

__all__ = ["runs_link", "port_free", "serve", "descendants"]

TRIAL_FILTER = "tags.`mistudy.role` = 'trial'"


def runs_link(base: str, experiment_id: str | None) -> str:
    """The study's trial runs in chart view (MLflow draws one chart per logged metric),
    sorted by gap closure. MLflow's URL state does the work: ``workflowType`` opens the
    model-training UI (not the GenAI overview); a search filter plus a sort key other than
    the start time lists the trial runs flat instead of collapsed under the study's parent."""
    query = urllib.parse.urlencode({
        "searchFilter": TRIAL_FILTER, "orderByKey": "metrics.`gap_closure`",
        "orderByAsc": "false", "compareRunsMode": "CHART",
        "workflowType": "machine_learning"}, quote_via=urllib.parse.quote)
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
          log: Path) -> int:
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
    with open(log, "ab") as fh:  # tied to our life: a SIGKILL of `mistudy ui` ends it too
        proc = spawn_tied(cmd, stdout=fh, stderr=fh, env=env)
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(f"starting the MLflow server on {url_base(host, port)} ...", flush=True)
        if _wait_ready(url_base(local_host(host), port), proc, stop):
            base = url_base(host if host not in ("0.0.0.0", "::") else _reachable(host), port)
            print(f"MLflow UI: {runs_link(base, experiment_id)}\n(Ctrl-C to stop; server log: "
                  f"{log})", flush=True)
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
