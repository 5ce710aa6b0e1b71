"""Promise 4: on a 2-node loopback cluster, the worker node is killed mid-trial; the trial
resumes from its last checkpoint on the surviving node and its MLflow run continues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.study.conftest import (
    BIN,
    RayCluster,
    free_port,
    require_loopback,
    store_uri,
    study_runs,
    tiny_spec,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.cluster]


def _results(out: Path) -> dict[str, list[dict]]:
    exp = out / "ray" / "tiny"
    found = {}
    for t in exp.iterdir() if exp.exists() else []:
        f = t / "result.json"
        if f.exists():
            found[t.name] = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return found


def test_worker_node_killed_mid_trial(tmp_path: Path) -> None:
    require_loopback()
    cluster = RayCluster()
    port = free_port()
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    cluster.ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={cluster.port}",
                "--include-dashboard=false", *common)
    cluster.ray("start", f"--address={cluster.address}", "--node-ip-address=127.0.0.1",
                f"--node-manager-port={port}", *common)
    try:
        probe = ("import ray, sys; ray.init(address=sys.argv[1]); print([n['NodeID'] for n in "
                 f"ray.nodes() if n['NodeManagerPort'] == {port}][0])")
        worker_id = subprocess.run([str(BIN / "python"), "-c", probe, cluster.address],
                                   env=cluster.env, capture_output=True, text=True,
                                   timeout=120).stdout.strip().splitlines()[-1]
        spec = tiny_spec(tmp_path / "spec.yaml", trials=1, max_failures=2,
                         fixed={"epochs": 6, "train_size": 3000})
        out = tmp_path / "study"
        proc = subprocess.Popen([str(BIN / "mistudy"), "run", str(spec), "--out", str(out),
                                 "--address", cluster.address], env=cluster.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Both trials run at once, one per node. Wait until both have two epochs done.
        deadline = time.time() + 300
        while True:
            res = _results(out)
            if len(res) == 2 and all(len(r) >= 2 for r in res.values()):
                break
            assert proc.poll() is None and time.time() < deadline, proc.stderr
            time.sleep(0.2)
        nodes = {tid: r[-1]["node_id"] for tid, r in res.items()}
        assert len(set(nodes.values())) == 2, nodes
        # Kill the worker node: its raylet and the trial process running there.
        victim = next(tid for tid, node in nodes.items() if node == worker_id)
        killed = subprocess.run(["pkill", "-9", "-e", "-f", f"node.manager.port={port}"],
                                capture_output=True, text=True)
        assert "killed" in killed.stdout, killed
        try:
            os.kill(int(res[victim][-1]["pid"]), signal.SIGKILL)
        except ProcessLookupError:
            pass  # it went down with its raylet
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        res = _results(out)
        head = {r["node_id"] for rs in res.values() for r in rs}
        moved = [tid for tid, rs in res.items() if len({r["node_id"] for r in rs}) == 2]
        timeline = {t: [(r["epoch"], r["node_id"][:6]) for r in rs] for t, rs in res.items()}
        assert moved == [victim], timeline  # the trial of the dead node moved
        rs = res[moved[0]]
        first_on_new = next(r for r in rs if r["node_id"] != rs[0]["node_id"])
        assert first_on_new["epoch"] >= 1  # resumed from a checkpoint, not from scratch
        assert sorted({r["epoch"] for r in rs}) == list(range(6))
        uri = store_uri(out)
        _, children = study_runs(uri, "tiny", out)
        assert len(children) == 2 and len(head) == 2
        client = MlflowClient(uri)
        for c in children:
            assert c.info.status == "FINISHED"
            steps = [m.step for m in client.get_metric_history(c.info.run_id, "epoch")]
            assert sorted(steps) == list(range(6)), steps
    finally:
        if "proc" in locals() and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        cluster.stop()
