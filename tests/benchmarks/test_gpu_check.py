"""The GPU check runs end to end on the CPU with --smoke, as a torch-only box would run it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_gpu_check_smoke_writes_every_part(tmp_path: Path) -> None:
    # No ray/mlflow/optuna on a GPU box: the check must not import them.
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    res = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check-smoke.json").read_text())
    assert [r["batch"] for r in data["shallow"]] == [100, 200]
    assert {r["precision"] for r in data["resnet18"]} == {"fp32", "bf16"}
    assert [r["N"] for r in data["eigh"]] == [64, 128]
    assert [(r["N"], r["alpha"]) for r in data["trace"]] == [
        (n, a) for n in (64, 128) for a in (1.01, 2.0, 3.0)]
    assert all(r["abs_diff_bits"] < 1e-9 for r in data["trace"])  # same value either path
    assert [r["k"] for r in data["shared"]] == [1, 2]
    for part in ("shallow", "resnet18", "eigh", "trace", "shared"):
        for row in data[part]:
            assert all(math.isfinite(v) and v > 0 for v in row.values()
                       if isinstance(v, float)), row
    assert data["shared"][0]["slowdown_vs_k1"] == 1.0


def test_the_check_imports_no_study_dependency() -> None:
    code = ("import sys, benchmarks.gpu_check; "
            "bad = [m for m in ('ray', 'mlflow', 'optuna') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
