"""What a command costs the machine, counted over every process it starts (the driver, Ray's
daemons and workers, the MLflow server and its workers), side by side with the setting it
replaced: a small study with a local Ray that prestarts idle workers (Ray's default) and
without (mistudy's), and ``mistudy ui`` with MLflow's 4 server processes and with 1. And the
same study joining a Ray that is already running (``--address``, a head started once on
127.0.0.1): the cluster's processes (daemons, and the workers it starts for the study) are
counted while the command runs -- what a test suite sharing one Ray would save per study.

A command's processes outlive its own accounting (Ray's daemons are not its children when
they exit), so every process descended from the command is followed in ``/proc`` every 0.1 s
while the command runs, and its last CPU reading kept (what a process used in its last tenth
of a second is lost). CPU-seconds, not wall time, are what a machine running many studies
(or the test suite) runs out of.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

TINY = {  # the test suite's tiny study: start costs dominate its 4 short trials
    "name": "tiny", "fixed": {"dataset": "fashion_mnist", "model": "shallow", "epochs": 2,
                              "train_size": 500, "val_size": 100, "test_size": 100,
                              "kernel": {"calibration_batches": 2, "horizon": 2},
                              "mi_grad_batches": 1},
    "search": {"families": {"power": {}, "exponential": {}, "cosine": {}},
               "alpha": [1.01, 2.0], "batch_size": [50]},
    "trials": 4, "seeds": [0],
}
_HZ = os.sysconf("SC_CLK_TCK")


def _snapshot() -> dict[str, tuple[str, str, float, str]]:
    """pid -> (start time, parent pid, CPU seconds so far, command line), every process."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / _HZ  # utime + stime, in ticks
        out[pid] = (fields[19], fields[1], cpu, cmd or stat[stat.find("(") + 1:stat.rfind(")")])
    return out


def _adopt(snap: dict[str, tuple[str, str, float, str]], ours: dict[str, str]) -> None:
    """Add to ``ours`` (pid -> start time) every process whose parent is ours: a process
    stays ours after its parent exits (Ray's daemons outlive the driver's accounting)."""
    grew = True
    while grew:
        grew = False
        for pid, (start, ppid, _, _) in snap.items():
            if pid not in ours and ppid in ours:
                ours[pid] = start
                grew = True


def _environ_has(pid: str, mark: bytes) -> bool:
    try:
        return mark in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def measure(argv: list[str], env: dict[str, str], until: str | None = None,
            also: bytes | None = None) -> dict[str, Any]:
    """Wall seconds, and CPU-seconds over every process descended from ``argv``; with
    ``until``, the command is sent SIGTERM once that text appears in its output (a server's
    ready line) and waited for. With ``also``, every process whose environment holds that
    text counts too, for the CPU it uses while the command runs (a Ray cluster started
    before it: its daemons, and the workers its raylet starts for the command)."""
    seen: dict[tuple[str, str], tuple[float, str]] = {}  # (pid, start) -> (CPU, command)
    ours: dict[str, str] = {}
    before = {(pid, v[0]): v[2] for pid, v in _snapshot().items()} if also else {}
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.time()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        ours[str(proc.pid)] = ""
        while True:
            done = proc.poll() is not None
            snap = _snapshot()
            if also:
                for pid in snap:
                    if pid not in ours and _environ_has(pid, also):
                        ours[pid] = snap[pid][0]
            _adopt(snap, ours)
            for pid, (start, _, cpu, cmd) in snap.items():
                if pid in ours and ours[pid] in ("", start):  # not a reused pid
                    ours[pid] = start
                    seen[(pid, start)] = (cpu - before.get((pid, start), 0.0), cmd)
            if done:
                break
            if until is not None:
                log.seek(0)
                if until in log.read():
                    proc.terminate()
                    until = None
            time.sleep(0.1)
        wall = time.time() - t0
        if proc.returncode not in (0, -15, 143):
            log.seek(0)
            raise RuntimeError(f"{argv[1]} failed ({proc.returncode}): {log.read()[-2000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(sum(cpu for cpu, _ in seen.values()), 2),
            "processes": len(seen)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Cluster:
    """``ray start --head`` on 127.0.0.1 with token authentication, as the suite's cluster
    fixture starts it; its processes are known by the token in their environment."""

    def __init__(self) -> None:
        self.address = f"127.0.0.1:{_free_port()}"
        token = secrets.token_hex(16)
        self.mark = f"RAY_AUTH_TOKEN={token}".encode()
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                    "RAY_USAGE_STATS_ENABLED": "0"}

    def __enter__(self) -> _Cluster:
        ray = str(Path(sys.executable).with_name("ray"))
        subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1",
                        f"--port={self.address.rsplit(':', 1)[1]}", "--num-cpus", "2",
                        "--include-dashboard=false", "--disable-usage-stats"],
                       env=self.env, check=True, capture_output=True, timeout=180)
        time.sleep(5)  # its idle workers have started: their imports are not the study's
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in range(3):  # this cluster only: `ray stop` would stop every Ray here
            pids = [p for p in _snapshot() if int(p) != os.getpid()
                    and _environ_has(p, self.mark)]
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not pids:
                return
            time.sleep(0.5)


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = sorted({k for r in rows for k in r})
    return {k: round(statistics.median(r.get(k, 0.0) for r in rows), 2) for k in keys}


def run(repeat: int = 2) -> list[dict[str, Any]]:
    exe = str(Path(sys.executable).with_name("mistudy"))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "spec.yaml"
        spec.write_text(yaml.safe_dump(TINY))
        study = Path(d) / "ui-study"
        subprocess.run([exe, "run", str(spec), "--out", str(study), "--quiet"], check=True,
                       capture_output=True)
        cases = [("study, Ray prestarts idle workers (Ray's default)",
                  {"RAY_prestart_worker_first_driver": "1"}, None),
                 ("study, no prestarted workers (mistudy)", {}, None),
                 ("ui, 4 server processes (MLflow's default)", {}, "4"),
                 ("ui, 1 server process (mistudy)", {}, "1")]
        shared = "study joining a running Ray (--address; its processes counted)"
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in cases}
        runs[shared] = []
        for i in range(repeat):  # the cases interleaved: a drift in the machine hits each
            with _Cluster() as cluster:
                out = Path(d) / f"study-shared-{i}"
                runs[shared].append(measure(
                    [exe, "run", str(spec), "--out", str(out), "--quiet",
                     "--address", cluster.address], cluster.env, also=cluster.mark))
            for k, (name, extra, ui_workers) in enumerate(cases):
                env = {**os.environ, **extra}
                if ui_workers is None:
                    out = Path(d) / f"study-{k}-{i}"
                    runs[name].append(measure(
                        [exe, "run", str(spec), "--out", str(out), "--quiet"], env))
                else:
                    runs[name].append(measure(
                        [exe, "ui", "--out", str(study), "--port", str(_free_port()),
                         "--workers", ui_workers], env, until="MLflow UI:"))
        rows = [{"case": name, "repeat": repeat, **_median(r)} for name, r in runs.items()]
    return rows
