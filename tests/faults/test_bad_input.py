"""Promise 1: bad input never starts expensive work and never corrupts a store -- property-based
over the parsers, and real corrupt files through the command line."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.spec import SpecError, parse_spec
from tests.conftest import write_idx
from trainables.config import ConfigError, TrainConfig, apply_overrides
from trainables.records import flatten

pytestmark = pytest.mark.faults

KEYS = ["dataset", "model", "epochs", "batch_size", "lr", "seed", "alpha", "device",
        "transition", "kernel", "train_size", "optimizer", "yhat", "estimator", "bogus",
        "threads", "input_size"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["family", "exponent", "rate", "c", "x", "yhat", "horizon", "power", "alpha"]),
        inner, max_size=3)), max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_any_train_config_validates_or_is_rejected_with_one_line(raw: dict) -> None:
    try:
        TrainConfig.from_dict(raw)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(values, st.dictionaries(st.sampled_from(
    ["name", "fixed", "search", "trials", "seeds", "objective", "scheduler", "stopper",
     "resources", "asha", "max_failures", "extra"]), values, max_size=6)))
def test_any_spec_validates_or_lists_its_problems(raw: object) -> None:
    try:
        parse_spec(raw)
    except SpecError as exc:
        assert exc.problems and all(p and "\n" not in p for p in exc.problems)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="abcxyz.=01-", max_size=12), max_size=4))
def test_any_set_override_is_handled(sets: list[str]) -> None:
    """Every ``--set`` list ends in one line, or is accepted only when each override names a
    key of the training config (the alphabet spells none: accepted means no override)."""
    try:
        cfg = TrainConfig.from_dict(apply_overrides({}, sets))
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        known = set(flatten(cfg.to_dict())) | set(cfg.to_dict())
        assert all(s.partition("=")[0] in known for s in sets), sets


def _train(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mistudy")
    return subprocess.run([str(exe), "train", *args, "--set", "epochs=1"], capture_output=True,
                          text=True, timeout=120)


def _idx_folder(root: Path) -> Path:
    root.mkdir()
    for prefix, n in (("train", 1200), ("t10k", 400)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


@pytest.mark.parametrize("damage", ["truncate", "magic"])
def test_corrupt_data_file_exits_2_with_one_line(tmp_path: Path, damage: str) -> None:
    folder = _idx_folder(tmp_path / "idx")
    victim = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(victim.read_bytes())
    raw = raw[:-100] if damage == "truncate" else b"\x00\x00\x08\x07" + raw[4:]
    victim.write_bytes(gzip.compress(raw))
    out = tmp_path / "out"
    res = _train("--set", f"data_dir={folder}", "--set", "train_size=500", "--set",
                 "batch_size=50", "--out", str(out))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert ("truncated" if damage == "truncate" else "magic") in lines[0]
    assert not out.exists()


def test_yaml_that_builds_python_objects_and_non_utf8_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("epochs: !!python/object/apply:os.system ['touch /tmp/mistudy-pwned']\n")
    res = _train("--config", str(evil))
    assert res.returncode == 2 and "not valid safe YAML" in res.stderr
    assert not Path("/tmp/mistudy-pwned").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"epochs: \xff\xfe\n")
    res = _train("--config", str(bad))
    assert res.returncode == 2 and "not UTF-8" in res.stderr


def test_bad_spec_writes_nothing_to_mlflow(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    client.create_experiment("existing")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "existing", "search": {"families": {"power": {}}},
                                    "fixed": {"lr": -1, "epochs": 0}}))
    exe = Path(sys.executable).with_name("mistudy")
    res = subprocess.run([str(exe), "run", str(spec), "--out", str(tmp_path / "st"),
                          "--tracking-uri", uri], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "fixed:" in res.stderr
    exp = client.get_experiment_by_name("existing")
    assert client.search_runs([exp.experiment_id]) == []
    assert not (tmp_path / "st").exists()
