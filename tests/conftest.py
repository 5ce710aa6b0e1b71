from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

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


