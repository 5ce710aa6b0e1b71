from __future__ import annotations

import gzip
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.study.conftest import MlflowServer, RayCluster, require_loopback


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file by the format's definition (magic 0x0000 08 ndim)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


@pytest.fixture
def synthetic_idx(tmp_path: Path) -> Path:
    """Four IDX files where every image's first pixel encodes its class and second/third pixels
    its index in the file, so tests can check balance and disjointness independently."""
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix, n, gz in (("train", 1200, True), ("t10k", 400, False)):
        labels = np.arange(n) % 10
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels * 20
        images[:, 0, 1] = np.arange(n) // 256
        images[:, 0, 2] = np.arange(n) % 256
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return folder


# Shared by tests/study and tests/faults: one MLflow server and one Ray cluster per session.
@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()



@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    require_loopback()
    cluster = RayCluster()
    cluster.start()
    yield cluster
    cluster.stop()




# ---- one real study shared by the tests that only read it (issue 10, 13) ------------------
EPOCHS = 2


def tune_epochs(out: Path) -> dict[str, list[int]]:
    """trial id -> the epochs in Tune's result.json, in order (every experiment)."""
    found = {}
    for path in (out / "ray").glob("*/*/result.json"):
        found[path.parent.name] = [json.loads(ln)["epoch"] for ln in path.read_text().splitlines()
                                   if ln.strip()]
    return found


@pytest.fixture(scope="session")
def grown_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-configuration study (seeds 0 and 1) that a second writer tried to join while it ran,
    then grown to 4 configurations."""
    from tests.study.conftest import BIN, mistudy, tiny_spec

    root = tmp_path_factory.mktemp("grow")
    out = root / "study"
    spec = tiny_spec(root / "spec.yaml", trials=2, seeds=[0, 1])
    first = subprocess.Popen([str(BIN / "mistudy"), "run", str(spec), "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "ray").glob("*/*/result.json")):
        time.sleep(0.2)  # the first writer is training
    # both at once, while the first trains: a resume, and a plain run racing for the folder
    procs = [subprocess.Popen([str(BIN / "mistudy"), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for args in (("run", "--resume", "--out", str(out)),
                          ("run", str(spec), "--out", str(out)))]
    second, racer = (subprocess.CompletedProcess(p.args, p.wait(timeout=300),
                                                 *p.communicate()) for p in procs)
    assert first.poll() is None, "the first writer ended before the others tried"
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    before = optuna_trials(out)
    grown = mistudy("run", "--resume", "--out", str(out), "--trials", "4", timeout=900)
    assert grown.returncode == 0, grown.stderr[-3000:]
    return {"root": root, "out": out, "first_pid": first.pid, "second": second,
            "racer": racer, "first_stdout": stdout, "optuna_before": before,
            "grown": grown}


def optuna_trials(out: Path) -> dict[int, tuple[float | None, dict]]:
    import optuna

    sid = json.loads((out / "study.json").read_text())["study_id"]
    st = optuna.load_study(study_name=sid, storage=f"sqlite:///{out / 'optuna.db'}")
    return {t.number: (t.value, t.params) for t in st.trials}


