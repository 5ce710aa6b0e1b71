"""``fixed: {estimator: trace}`` with integer α choices is a study that runs (issue 35 item
10): the spec was checked against the default α 1.01, which the trace path refuses, so such a
study could never start. Real Ray, MLflow and Fashion-MNIST files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.study.conftest import mistudy, require_loopback, tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.faults]


def test_a_trace_estimator_study_with_alpha_choices_runs(tmp_path: Path) -> None:
    require_loopback()
    spec = tiny_spec(tmp_path / "spec.yaml", trials=2, seeds=[0],
                     fixed={"epochs": 1, "estimator": "trace"},
                     search={"families": {"power": {}}, "alpha": {"choices": [2, 3]},
                             "batch_size": [50]})
    out = tmp_path / "s"
    res = mistudy("run", str(spec), "--out", str(out), "--quiet", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    alphas = set()
    for trial in (out / "ray" / "tiny").iterdir():
        if (trial / "result.json").is_file():
            row = json.loads((trial / "result.json").read_text().splitlines()[0])
            assert row["config"]["estimator"] == "trace"
            alphas.add(row["config"]["alpha"])
    assert alphas <= {2, 3} and alphas
