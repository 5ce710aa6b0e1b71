"""Ray clusters on loopback: two nodes started with `ray start`, trials on both, one MLflow
server; and (the same nodes, simulated GPUs) four fractional-GPU trials at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.study.conftest import mistudy, study_runs, tiny_spec
from tests.study.test_study_local import check_study_store

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _intervals(study_dir: Path) -> list[tuple[float, float]]:
    spans = []
    for trial in (study_dir / "ray" / "tiny").iterdir():
        lines = (trial / "result.json").read_text().splitlines() if trial.is_dir() else []
        if lines:
            first, last = json.loads(lines[0]), json.loads(lines[-1])
            spans.append((first["timestamp"] - first["time_this_iter_s"], last["timestamp"]))
    return spans


def test_two_node_cluster_trials_on_both_nodes_one_server(tmp_path: Path, ray_cluster,
                                                          mlflow_server) -> None:
    # Trials long enough (seconds each) that the second node's actor is up before the first
    # node's reused actor has run them all: on a loaded machine 2-epoch trials of 500 images
    # once all ran on one node.
    epochs = 3
    spec = tiny_spec(tmp_path / "spec.yaml", name="tiny",
                     fixed={"epochs": epochs, "train_size": 1500})
    out = tmp_path / "study"
    res = mistudy("run", str(spec), "--out", str(out), "--address", ray_cluster.address,
                  "--tracking-uri", mlflow_server.uri, "--cpus-per-trial", "1",
                  env=ray_cluster.env)
    assert res.returncode == 0, res.stderr[-3000:]
    children = check_study_store(mlflow_server.uri, out, epochs=epochs)
    nodes = {c.data.tags["mistudy.node"] for c in children}
    assert nodes == {"127.0.0.1"}  # both nodes live on loopback ...
    hosts = {c.data.tags["mistudy.hostname"] for c in children}
    assert hosts  # ... so the node ids tell them apart:
    node_ids = {c.data.tags.get("mistudy.node_id") for c in children}
    assert len(node_ids) == 2, node_ids


def test_fractional_gpus_run_four_trials_at_once_and_fall_back_to_cpu(
        tmp_path: Path, ray_cluster, mlflow_server) -> None:
    # 4 slots, one seed: the ordered search runs at most sampler_lag configurations at once,
    # so the spec sets the lag that fills the slots (what `mistudy run` says to do)
    spec = tiny_spec(tmp_path / "spec.yaml", name="tiny", trials=4, sampler_lag=4,
                     fixed={"epochs": 5, "train_size": 2000})
    out = tmp_path / "study"
    res = mistudy("run", str(spec), "--out", str(out), "--address", ray_cluster.address,
                  "--tracking-uri", mlflow_server.uri, "--cpus-per-trial", "0.5",
                  "--gpus-per-trial", "0.5", env=ray_cluster.env)
    assert res.returncode == 0, res.stderr[-3000:]
    _, mine = study_runs(mlflow_server.uri, "tiny", out)
    assert len(mine) == 5
    for c in mine:
        assert c.data.tags["mistudy.cuda_visible_devices"] in {"0", "1"}
        assert c.data.tags["mistudy.device"] == "cpu"  # no CUDA here: the CPU fallback
    spans = _intervals(out)
    best = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert best >= 4, spans
