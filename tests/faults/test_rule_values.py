"""The closure pruner's rules refused in one line, by one rule for the spec and for
``mistudy replay`` (issue 35, items 11 and 15, and the low items on ``pruner:`` and JSON)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from study.spec import SpecError, parse_spec
from tests.study.conftest import mistudy

BASE = {"name": "s", "search": {"families": {"power": {}}}, "trials": 2,
        "scheduler": "closure"}
BUNDLE = str(Path(__file__).resolve().parents[2] / "docs/findings/closure-mnist.tar.gz")


@pytest.mark.parametrize("rules,named", [
    ({"acc_drop": -1}, "pruner.acc_drop"), ({"acc_drop": 1.5}, "pruner.acc_drop"),
    ({"ce_rise": float("nan")}, "pruner.ce_rise"), ({"rungs": [0, 5]}, "pruner.rungs"),
    ({"median_min": 0}, "pruner.median_min"), ({"bogus": 1}, "pruner.bogus"),
    ({"quantile": 1}, "pruner.quantile")])
def test_a_bad_rule_in_the_spec_is_one_line(rules: dict, named: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, "pruner": rules})
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(named)


def test_pruner_rules_without_the_closure_scheduler_are_refused() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, "scheduler": "asha", "pruner": {"grace": 3}})
    assert err.value.problems == [
        "pruner: '{...}' -- only with scheduler: closure (it configures that pruner)"]


@pytest.mark.parametrize("flag,value", [("--rungs", "0"), ("--acc-drop", "nan"),
                                        ("--acc-drop", "-1"), ("--median-min", "0"),
                                        ("--median-min", "-3"), ("--ce-rise", "inf"),
                                        ("--quantile", "1")])
def test_a_bad_replay_flag_is_one_line_before_any_work(flag: str, value: str) -> None:
    res = mistudy("replay", BUNDLE, flag, value)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}") and "Traceback" \
        not in res.stderr, lines


def test_replay_json_is_valid_json_when_spearman_is_undefined() -> None:
    """Spearman needs three configurations at the median epoch: none reach epoch 99."""
    res = mistudy("replay", BUNDLE, "--format", "json", "--rungs", "99")
    assert res.returncode == 0, res.stderr

    def refuse(name: str) -> float:
        raise AssertionError(f"{name} is not JSON")

    data = json.loads(res.stdout, parse_constant=refuse)
    assert data["spearman_at_median_epoch"] is None and not math.isnan(data["epochs_saved"])


def test_a_split_draw_out_of_range_is_refused_before_planning(tmp_path: Path) -> None:
    """Issue 35 item 18: ``confirm --data-seeds 4294967296`` started Ray and failed every
    trial with a false message about MLflow; now one line, before the folder is read."""
    res = mistudy("confirm", str(tmp_path / "nothing"), "--data-seeds", "4294967296,1,2")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --data-seeds: 4294967296 -- allowed: split draws in [0, 4294967296)"]
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("bad,named", [("max_acc_drop: abc", "objective.max_acc_drop"),
                                       ("max_ce_rise: -1", "objective.max_ce_rise"),
                                       ("last_k: 0", "objective.last_k")])
def test_a_bundle_whose_spec_has_one_bad_value_is_refused_not_defaulted(
        tmp_path: Path, bad: str, named: str) -> None:
    """Issue 35 item 9: ``rank`` read one bad value as "no guard" and showed a winner that
    loses 6.9 accuracy points as "ok"; it refuses, in one line, by the spec's own rule."""
    import io
    import tarfile

    members = {}
    with tarfile.open(BUNDLE) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            members[m.name] = f.read() if f else b""
    key = bad.split(":")[0]
    spec = members["spec.yaml"].decode()
    assert f"{key}:" in spec
    import re

    members["spec.yaml"] = re.sub(rf"{key}: [^,}}\s]+", bad, spec, count=1).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for k, v in members.items():
            info = tarfile.TarInfo(k)
            info.size = len(v)
            tar.addfile(info, io.BytesIO(v))
    bundle = tmp_path / "bad.tar.gz"
    bundle.write_bytes(buf.getvalue())
    res = mistudy("rank", str(bundle))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and named in lines[0], res.stderr[-1500:]


def test_a_range_edge_warning_is_one_line_and_counts_the_winner_plainly() -> None:
    """Issue 35, low: a long warning wrapped into a second ``warning:   it`` line, and a winner
    alone at the edge read "so are 1 of the top 2"."""
    from analysis import EdgeInfo, format_edges

    edges = [EdgeInfo("search.families.sigmoid.midpoint", 29.87654, "high", 0.0, 30.0, 1, 2,
                      "sigmoid midpoint=29.88"),
             EdgeInfo("search.batch_size", 64, "low", 64, 1024, 3, 5, "power",
                      (64, 128, 256, 512, 1024))]
    lines = format_edges(edges)
    assert lines == [
        "search.families.sigmoid.midpoint: the winner's 29.88 is at the upper edge of [0, 30] "
        "(1 of the top 2 near it: the winner alone); widen it",
        "search.batch_size: the winner's 64 is the smallest of [64, 128, 256, 512, 1024] "
        "(3 of the top 5 chose it); widen it"]
    res = mistudy("rank", BUNDLE.replace("closure-mnist", "closure-fashion"))
    warned = [ln for ln in res.stdout.splitlines() + res.stderr.splitlines()
              if ln.startswith("warning:")]
    assert len(warned) == 2 and all(ln.endswith("widen it") for ln in warned), warned
