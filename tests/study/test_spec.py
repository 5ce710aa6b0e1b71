from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from study.spec import PRESETS, SpecError, load_spec, parse_spec

GOOD = {"name": "t", "fixed": {"dataset": "fashion_mnist", "epochs": 2},
        "search": {"families": {"power": {"exponent": [0.2, 1.0]}, "step": {}},
                   "alpha": [1.0, 2.0], "batch_size": [64, 128]},
        "trials": 3, "seeds": [0, 1]}


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_parse(preset: str) -> None:
    spec = load_spec(preset=preset)
    assert spec.name == preset and spec.trials >= 1
    if preset.startswith("paper"):
        lo, hi = spec.families["power"]["exponent"]
        assert lo <= 0.5 <= hi and spec.alpha == (1.01, 1.01)
        assert spec.fixed["epochs"] == 50 and spec.fixed["model"] == "shallow"


def test_good_spec_fills_declared_ranges_and_counts_trials() -> None:
    spec = parse_spec(GOOD)
    assert spec.families["step"] == {"step_epoch": (1, 500), "value": (0.0, 1.0)}
    assert spec.families["power"] == {"exponent": (0.2, 1.0)}
    assert spec.num_baselines == 4 and spec.num_trials == 3 * 2 + 4
    assert spec.objectives[0].metric == "val_ce" and spec.objectives[0].mode == "min"


def test_every_problem_is_reported_with_its_path() -> None:
    bad = {**GOOD, "trials": 0, "seeds": [1, 1],
           "search": {"families": {"power": {"exponent": [-1, 9]}, "wavy": {}},
                      "alpha": [0, 2], "batch_size": [1]},
           "objective": {"metric": "test_ce"}, "bogus": 3,
           "fixed": {"alpha": 1.5, "dataset": "mnist"}}
    with pytest.raises(SpecError) as info:
        parse_spec(bad)
    text = "\n".join(info.value.problems)
    for fragment in ("trials: 0", "seeds: [1, 1]", "search.families.power.exponent: [-1, 9]",
                     "search.families.wavy", "search.alpha: [0, 2]", "search.batch_size: [1]",
                     "objective.metric: 'test_ce' -- validation metrics only", "bogus: 3",
                     "fixed.alpha: 1.5"):
        assert fragment in text, fragment
    assert all("\n" not in p for p in info.value.problems)


def test_fixed_settings_are_checked_like_a_train_config() -> None:
    with pytest.raises(SpecError, match="fixed: model='vgg'"):
        parse_spec({**GOOD, "fixed": {"model": "vgg"}})


def test_multi_objective_pair() -> None:
    spec = parse_spec({**GOOD, "objective": [{"metric": "val_gap"}, {"metric": "val_acc"}]})
    assert [(o.metric, o.mode) for o in spec.objectives] == [("val_gap", "min"),
                                                              ("val_acc", "max")]


def test_bad_spec_on_the_command_line_exits_2_before_ray(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "trials": -1, "search": {"families": {"x": {}}}}))
    exe = Path(sys.executable).with_name("mistudy")
    out = tmp_path / "study"
    res = subprocess.run([str(exe), "run", str(path), "--out", str(out)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and all(ln.startswith("error: ") for ln in lines)
    assert not out.exists()
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['true']\n")
    res = subprocess.run([str(exe), "run", str(evil)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "not valid safe YAML" in res.stderr


@pytest.mark.parametrize("flag,value,key", [
    ("--cpus-per-trial", "0", "resources.cpus_per_trial"),
    ("--gpus-per-trial", "-1", "resources.gpus_per_trial"),
    ("--trials", "0", "trials"), ("--trials", "100001", "trials")])
def test_a_flag_and_the_spec_refuse_a_value_by_one_rule(tmp_path: Path, flag: str, value: str,
                                                        key: str) -> None:
    """The same value, set in the spec or on the command line, is refused with the same
    'allowed' text, before anything is written."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    exe = Path(sys.executable).with_name("mistudy")
    res = subprocess.run([str(exe), "run", str(path), "--out", str(tmp_path / "o"), flag, value],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and not (tmp_path / "o").exists()
    raw = dict(GOOD)
    if key == "trials":
        raw["trials"] = int(value)
    else:
        raw["resources"] = {key.split(".")[1]: float(value)}
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    allowed = str(info.value).split(" -- ", 1)[1].strip()  # "KEY: VALUE -- ALLOWED"
    assert res.stderr.strip() == f"error: {flag}={float(value) if 'pus' in flag else value}" \
        f" -- allowed: {allowed}", (res.stderr, allowed)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_spec_rank_flag_and_analyze_refuse_a_last_k_by_one_rule(tmp_path: Path,
                                                                value: str) -> None:
    """objective.last_k in a spec, `mistudy rank --last-k` and analysis.analyze(last_k=)
    refuse the same value with the same 'allowed' text; the flag and analyze do so before
    looking for the study (a study that does not exist is not what they report)."""
    from analysis import AnalysisError, analyze

    with pytest.raises(SpecError) as info:
        parse_spec({**GOOD, "objective": {"metric": "val_ce", "last_k": int(value)}})
    allowed = str(info.value).split(" -- ", 1)[1].strip()
    exe = Path(sys.executable).with_name("mistudy")
    missing = str(tmp_path / "no-such-study")
    res = subprocess.run([str(exe), "rank", missing, "--last-k", value], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.strip() == \
        f"error: --last-k={value} -- allowed: {allowed}", res.stderr
    with pytest.raises(AnalysisError) as err:
        analyze(missing, last_k=int(value))
    assert str(err.value) == f"last_k={value} -- allowed: {allowed}"


def test_alpha_searched_over_choices() -> None:
    import optuna

    from study._searcher import sample_config

    spec = parse_spec({**GOOD, "search": {**GOOD["search"], "alpha": {"choices": [3, 2]}},
                       "enqueue": [{"transition": {"family": "power", "exponent": 0.5},
                                    "alpha": 2, "batch_size": 64}]})
    assert spec.alpha_choices == (2.0, 3.0) and spec.alpha == (2.0, 3.0)
    assert spec.enqueue[0]["alpha"] == 2.0
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = {sample_config(study.ask(), spec)["alpha"] for _ in range(20)}
    assert drawn == {2.0, 3.0}  # only the choices, both reached
    with pytest.raises(SpecError) as err:
        parse_spec({**GOOD, "search": {**GOOD["search"], "alpha": {"choices": [2, 2]}}})
    assert "search.alpha" in str(err.value.problems)
    with pytest.raises(SpecError) as err:
        parse_spec({**spec.raw, "enqueue": [{"transition": {"family": "power",
                                                            "exponent": 0.5}, "alpha": 2.5}]})
    assert "one of the searched choices [2.0, 3.0]" in str(err.value.problems)


def test_versions_outside_the_tested_range_are_named_in_one_line(tmp_path) -> None:
    """Where mistudy relies on a dependency's internals, a version outside the range it was
    tested in is refused in one line (pyproject's bounds, study._versions); the venv holds
    exactly the pinned versions of constraints.txt."""
    from pathlib import Path

    from study._versions import SUPPORTED, exact_problems, version_problem

    assert version_problem("ray", "2.60.0") is None
    assert version_problem("mlflow", "3.17.2") is None
    for package, version in (("ray", "2.61.0"), ("ray", "2.59.3"), ("mlflow", "3.18.0"),
                             ("mlflow", "2.16.1")):
        problem = version_problem(package, version)
        assert problem and f"{package} {version}" in problem and "\n" not in problem
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    for package, (lo, hi) in SUPPORTED.items():  # one range, in both places
        assert f'{package}{"[tune]" if package == "ray" else ""}>=' \
               f'{".".join(map(str, lo))},<{".".join(map(str, hi))}"' in text
    assert exact_problems(str(Path(__file__).resolve().parents[2] / "constraints.txt")) == []
    other = tmp_path / "c.txt"
    other.write_text("ray==2.59.0\nmlflow==3.17.2\noptuna==5.1.0\ntorch==2.14.1\n")
    assert [p.split(":")[0] for p in exact_problems(str(other))] == ["ray"]
