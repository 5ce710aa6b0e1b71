"""Two ``mistudy ui --port P`` started together (issue 35 item 13): both pass the port check,
one server wins the bind; the other ``ui`` used to print the same link (the winner answered
its health check) and keep running. Now it finds the listener is not its own server, says so
in one line and exits 2; the winner serves. Real MLflow servers on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.study.conftest import BIN, free_port, tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.faults]


def _study(tmp: Path) -> Path:
    from mlflow.tracking import MlflowClient

    from study._folder import new_meta, write_new_study
    from study.spec import load_spec
    from trainables.studyfolder import StudyPaths

    spec = load_spec(str(tiny_spec(tmp / "spec.yaml")))
    out = tmp / "s"
    out.mkdir()
    write_new_study(StudyPaths(out), spec, new_meta(spec, None))
    MlflowClient(f"sqlite:///{out / 'mlflow.db'}").create_experiment(
        "tiny", artifact_location=(out / "mlartifacts").as_uri())
    return out


def test_the_ui_that_loses_the_port_says_so_and_exits(tmp_path: Path) -> None:
    out = _study(tmp_path)
    (tmp_path / "copy").mkdir()
    other = tmp_path / "copy" / "s"
    subprocess.run(["cp", "-a", str(out), str(other)], check=True)
    json.loads((other / "study.json").read_text())  # a second folder: a second writer lock
    port = free_port()
    procs = [subprocess.Popen([str(BIN / "mistudy"), "ui", "--out", str(f), "--port",
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for f in (out, other)]
    try:
        deadline = time.time() + 240
        while time.time() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.5)
        lost = [p for p in procs if p.poll() is not None]
        assert len(lost) == 1, "neither ui ended: both claim the port"
        loser = lost[0]
        err = loser.stderr.read() if loser.stderr else ""
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert loser.returncode == 2 and len(lines) == 1 and f"port {port}" in lines[0], err
        assert "Traceback" not in err
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
    winner = next(p for p in procs if p is not loser)
    assert winner.returncode == 0
    assert "MLflow UI:" in (winner.stdout.read() if winner.stdout else "")
