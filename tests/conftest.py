from __future__ import annotations

import gzip
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.study.conftest import MlflowServer, RayCluster, require_loopback

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share the cores: one compute thread each, for torch here and for the
    # processes the tests start (OpenMP threads spinning on a busy core made in-process
    # training 30x slower). Set before torch is first imported.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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


# `make test` runs the suite on two pytest-xdist workers (most of a study test's time is spent
# waiting on processes: Ray starting, a killed driver, a server). A session or module fixture
# is built once per worker that needs it, so the tests sharing an expensive one are sent to
# the same worker: one group per shared session fixture, one per module with a module
# fixture. The workers know the fixtures and write each test's group to a file; the
# controller's scheduler reads it. (xdist's own `xdist_group` mark is lost under pytest 9:
# xdist 3.8 renames the node id through an attribute pytest no longer reads.)
SHARED_GROUPS = {"grown_study": "grown-study", "ray_cluster": "ray-cluster"}


def _groups_file() -> Path:
    return Path(tempfile.gettempdir()) / f"mistudy-test-groups-{os.getpid()}.json"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # controller: tells each worker where to write
    node.workerinput["mistudy_groups"] = str(_groups_file())


# The longest tests start first, so the short ones fill the workers' ends (one 5-minute test
# handed out last kept a worker busy alone for minutes): the README's study, then the rest of
# the tests marked slow, each group in collection order. Every worker sorts the same way.
FIRST = ("tests/study/test_readme_example.py",)


def _start_order(item: pytest.Item) -> int:
    if item.nodeid.startswith(FIRST):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_start_order)  # stable: collection order within each rank
    target = getattr(config, "workerinput", {}).get("mistudy_groups")
    if target:  # an xdist worker
        groups = {item.nodeid: g for item in items if (g := _shared_group(item))}
        tmp = Path(f"{target}.{os.getpid()}")
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, target)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SharedFixtureScheduling(LoadGroupScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # the workers' collections are complete by now
                path = _groups_file()
                self.groups = json.loads(path.read_text()) if path.exists() else {}
            return self.groups.get(nodeid) or super()._split_scope(nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        _groups_file().unlink(missing_ok=True)


def _shared_group(item: pytest.Item) -> str | None:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    groups = [SHARED_GROUPS[name] for name in info.names_closure if name in SHARED_GROUPS]
    if groups:
        return "+".join(sorted(set(groups)))
    for defs in info.name2fixturedefs.values():
        if defs and defs[-1].scope == "module":
            return item.nodeid.split("::", 1)[0]
    return None


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

    meta = json.loads((out / "study.json").read_text())
    # named after the spec (readable in optuna-dashboard); a grown study keeps the name
    assert meta["optuna_study"] == meta["name"]
    st = optuna.load_study(study_name=meta["name"], storage=f"sqlite:///{out / 'optuna.db'}")
    return {t.number: (t.value, t.params) for t in st.trials}


