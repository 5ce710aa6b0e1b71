"""Real components for the study tests: MLflow servers and Ray clusters on 127.0.0.1 only."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

BIN = Path(sys.executable).parent


def tiny_spec(path: Path, **over: Any) -> Path:
    """A real study small enough for tests: real Fashion-MNIST files, shallow CNN."""
    spec = {
        "name": "tiny",
        "fixed": {"dataset": "fashion_mnist", "model": "shallow", "epochs": 2,
                  "train_size": 500, "val_size": 100, "test_size": 100,
                  "kernel": {"calibration_batches": 2, "horizon": 2}, "mi_grad_batches": 1},
        "search": {"families": {"power": {}, "exponential": {}, "cosine": {}},
                   "alpha": [1.01, 2.0], "batch_size": [50]},
        "trials": 4, "seeds": [0],
    }
    for k, v in over.items():
        if k == "fixed":
            spec["fixed"].update(v)
        else:
            spec[k] = v
    path.write_text(yaml.safe_dump(spec))
    return path


# The closure pruner with a rule that must fire: Δ val CE > -100 holds for every configuration,
# so the CE guard prunes each sampled one at the grace epoch (the enqueued are exempt).
FIRING_PRUNER = {"grace": 2, "window": 1, "acc_drop": None, "ce_rise": -100, "rungs": []}
GAP_OBJECTIVE = {"metric": "val_gap_reduction", "mode": "max", "last_k": 1}


def firing_closure_spec(path: Path, **over: Any) -> Path:
    """:func:`tiny_spec` under ``scheduler: closure`` with :data:`FIRING_PRUNER` (and the gap
    reduction objective unless ``over`` names another)."""
    return tiny_spec(path, **{"objective": GAP_OBJECTIVE, "scheduler": "closure",
                              "pruner": FIRING_PRUNER, **over})


def loopback_only() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def require_loopback() -> None:
    if not loopback_only():
        pytest.fail("this test starts Ray nodes, which bind to every routable address unless "
                    "the network namespace holds only loopback: run it through `make test` "
                    "(tests/netns.sh), e.g. tests/netns.sh .venv/bin/pytest tests/study")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 90) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.5)
    raise TimeoutError(url)


class MlflowServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
            stdout=open(self.root / "server.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,  # no job runner: ~10 processes a study never uses
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        wait_http(self.uri + "/health")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
            self.proc = None


class RayCluster:
    """`ray start --head` + a second `ray start` node, one CPU and two (simulated) GPUs each,
    both on 127.0.0.1, with Ray's token authentication on."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}

    def ray(self, *args: str) -> None:
        subprocess.run([str(BIN / "ray"), *args], env=self.env, check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        common = ["--num-cpus", "1", "--num-gpus", "2", "--disable-usage-stats"]
        self.ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                 "--include-dashboard=false", *common)
        self.ray("start", f"--address={self.address}", "--node-ip-address=127.0.0.1", *common)

    def stop(self) -> None:
        """SIGKILL this cluster's processes only (`ray stop` would stop every Ray on the
        machine, the local Rays of tests running alongside included): they are the ones whose
        environment holds this cluster's token -- workers too, whose command line Ray
        rewrites."""
        mark = f"RAY_AUTH_TOKEN={self.env['RAY_AUTH_TOKEN']}".encode()
        for _ in range(3):  # a dying raylet may still be starting a worker
            pids = [p for p in _pids() if p != os.getpid() and mark in _environ(p)]
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            if not pids:
                return
            time.sleep(0.5)


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _environ(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "environ").read_bytes()
    except OSError:
        return b""


def mistudy(*args: str, env: dict | None = None, timeout: float = 600
            ) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mistudy"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def store_uri(out: Path) -> str:
    """Where the study in ``out`` logs (study.json names the folder's own store "folder")."""
    import json

    from trainables.studyfolder import tracking_uri_of

    return tracking_uri_of(json.loads((out / "study.json").read_text()), out)[0]


def study_runs(tracking_uri: str, experiment: str, study_dir: Path | None = None
               ) -> tuple[list, list]:
    """(parent runs, child runs) of a study's experiment; of one study when ``study_dir``."""
    import json

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=10_000)
    if study_dir is not None:
        sid = json.loads((study_dir / "study.json").read_text())["study_id"]
        runs = [r for r in runs if r.data.tags.get("mistudy.study_id") == sid]
    parents = [r for r in runs if r.data.tags.get("mistudy.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mistudy.role") == "trial"]
    return parents, children


def epochs_reported(study_dir: Path) -> int:
    exp = study_dir / "ray" / "tiny"
    if not exp.exists():
        return 0
    return sum(len((t / "result.json").read_text().splitlines())
               for t in exp.iterdir() if (t / "result.json").exists())


def kill_driver_when(study_dir: Path, spec: Path | None, min_epochs: int,
                     log: Path | None = None, sig: int = signal.SIGKILL) -> None:
    """Start ``mistudy run SPEC`` (``--resume`` when ``spec`` is None) and SIGKILL the driver,
    then its process group, once ``min_epochs`` results are on disk; its output goes to
    ``log`` when given. With ``sig=SIGTERM`` the driver is asked to stop and left to save
    its state and end its Ray itself."""
    args = [str(spec)] if spec is not None else ["--resume"]
    sink = log.open("w") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen([str(BIN / "mistudy"), "run", *args, "--out", str(study_dir)],
                            stdout=sink, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while epochs_reported(study_dir) < min_epochs:
        assert proc.poll() is None, "the study ended before the kill"
        assert time.time() < deadline
        time.sleep(0.2)
    if sig != signal.SIGKILL:
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=180) != 0
        return
    os.kill(proc.pid, signal.SIGKILL)  # the driver dies without any cleanup
    proc.wait()
    time.sleep(1)
    try:  # then the rest of its machine: the local Ray it started
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tune_trial_ids(study_dir: Path, name: str = "tiny") -> set[str]:
    exp = study_dir / "ray" / name
    return {p.name for p in exp.iterdir() if p.is_dir() and (p / "result.json").exists()}
