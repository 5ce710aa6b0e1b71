"""The records module: exact param round trips, the schedule text, metrics.csv, and the
package structure it makes possible (analysis without torch, no import cycle)."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from trainables import TrainConfig
from trainables.records import (
    OPTIONAL_RECORD_KEYS,
    RECORD_KEYS,
    STRING_KEYS,
    MetricsWriter,
    flatten,
    param_text,
    read_metrics,
    run_name,
    schedule_text,
    typed_config,
    write_metrics,
)

ROOT = Path(__file__).resolve().parents[2]


def _str_fields(cls: type, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory if callable(f.default_factory) else None):
            continue
        t = str(f.type)
        if t.startswith("str") or t == "str | None":
            out.add(prefix + f.name)
    return out


def test_string_keys_are_the_str_fields_of_the_config() -> None:
    from trainables.config import KernelConfig

    expected = _str_fields(TrainConfig) | _str_fields(KernelConfig, "kernel.")
    expected |= {"transition.family"}
    assert STRING_KEYS == expected


@pytest.mark.parametrize("changes", [
    {}, {"lr": 1e-4, "weight_decay": 0.0, "data_dir": "3", "threads": None},
    {"transition": {"family": "cosine", "duration": 7, "floor": 0.05}, "alpha": 2.0,
     "kernel": {"sigma_yhat": 0.25, "yhat": "fixed"}, "precision": "bf16"},
])
def test_params_read_back_exactly_with_their_types(changes: dict) -> None:
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **changes}).to_dict()
    params = {k: param_text(v) for k, v in flatten(cfg).items()}  # what MLflow stores
    back = typed_config(params)
    assert back == cfg
    for k, v in flatten(back).items():  # 1.0 stays a float, 1 an int, "3" a string
        assert type(v) is type(flatten(cfg)[k]), k


def test_params_written_by_the_first_version_read_back_typed() -> None:
    # The first round wrote str(value) ("None" for null, "True" for booleans).
    old = {"lr": "0.001", "epochs": "10", "data_dir": "None", "alpha": "1.01",
           "transition.family": "power", "transition.exponent": "0.5", "seed": "0"}
    back = typed_config(old)
    assert back == {"lr": 0.001, "epochs": 10, "data_dir": None, "alpha": 1.01, "seed": 0,
                    "transition": {"family": "power", "exponent": 0.5}}


def test_schedule_text_groups_seeds_and_names_runs() -> None:
    cfg = {"transition": {"family": "power", "exponent": 0.5}, "alpha": 1.01,
           "batch_size": 256, "seed": 0}
    assert run_name(cfg) == "power p=0.5 α=1.01 b256 s0"
    assert schedule_text(cfg) == schedule_text({**cfg, "seed": 3})  # seeds share it
    assert schedule_text({**cfg, "alpha": 2.0}) != schedule_text(cfg)
    assert run_name({**cfg, "mistudy_baseline": True}) == "CE b256 s0"


def test_metrics_csv_round_trip_old_files_and_torn_lines(tmp_path: Path) -> None:
    recs = [{k: float(i + j) for j, k in enumerate(RECORD_KEYS)} | {"epoch": i}
            for i in range(3)]
    write_metrics(tmp_path / "m.csv", recs)
    assert read_metrics(tmp_path / "m.csv") == recs
    # a file from before the optional keys, with a row torn by a kill
    old_keys = [k for k in RECORD_KEYS if k not in OPTIONAL_RECORD_KEYS]
    lines = [",".join(old_keys)] + [",".join(str(r[k]) for k in old_keys) for r in recs]
    (tmp_path / "old.csv").write_text("\n".join(lines) + "\n0,1.0,2.")
    got = read_metrics(tmp_path / "old.csv")
    assert [r["epoch"] for r in got] == [0, 1, 2]
    assert all(k not in got[0] for k in OPTIONAL_RECORD_KEYS)
    with MetricsWriter(tmp_path / "a.csv") as w:
        w.write(recs[0])
    with MetricsWriter(tmp_path / "a.csv", append=True) as w:
        w.write(recs[1])
    assert read_metrics(tmp_path / "a.csv") == recs[:2]


def test_analysis_reads_studies_without_importing_torch() -> None:
    code = ("import sys, analysis, analysis._load, analysis._rank, trainables.records; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _imports(path: Path, package: str) -> set[str]:
    """Project modules a module imports, at any level (module body or inside functions)."""
    mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    base = mod.rsplit(".", 1)[0] if path.name != "__init__.py" else mod
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # type-checking imports do not run
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                name = f"{parent}.{node.module}" if node.module else parent
            else:
                name = node.module or ""
            names = [name] + [f"{name}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] in ("trainables", "study", "analysis")}
    return out


def test_no_import_cycle_between_project_modules() -> None:
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for pkg in ("trainables", "study", "analysis") for p in (ROOT / pkg).glob("*.py")}
    graph = {m: {i for i in _imports(p, m.split(".")[0]) if i in files and i != m}
             for m, p in files.items()}
    for m in list(graph):  # a package's __init__ is not an edge back into it
        graph[m].discard(m.split(".")[0])
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            assert state.get(n) != 1, f"import cycle: {' -> '.join(path + [m, n])}"
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
    # the layering: trainables -> analysis -> study, no arrow back up
    for m, deps in graph.items():
        if m.startswith("trainables"):
            assert not any(d.startswith(("analysis", "study")) for d in deps), m
        if m.startswith("analysis"):
            assert not any(d.startswith("study") for d in deps), m
    # study uses analysis only through its public API (analysis/__init__.py), never a
    # _private module; analysis loads and computes: it trains nothing (no torch)
    for m, deps in graph.items():
        if m.startswith("study"):
            private = {d for d in deps if d.startswith("analysis._")}
            assert not private, (m, private)



def test_analysis_holds_no_torch_import_and_sql_in_one_read_only_room() -> None:
    """analysis loads and computes: no torch anywhere in it (not even inside a function). It
    reads MLflow through the public client, except a local store's runs, read from their
    tables in one module (``_sqlite_runs``: 1.4 s instead of 5 s for 1,000 runs): there and
    only there SQL, on a read-only connection, never SQLAlchemy, never the metrics tables.
    ``tests/analysis/test_sqlite_runs.py`` holds that module to MLflow's own search."""
    for path in sorted((ROOT / "analysis").glob("*.py")):
        tree = ast.parse(path.read_text())
        sql_room = path.name == "_sqlite_runs.py"
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            banned = ("torch", "sqlalchemy") if sql_room else ("torch", "sqlalchemy", "sqlite3")
            assert not any(n.split(".")[0] in banned for n in names), (path.name, names)
        text = path.read_text()
        assert "FROM metrics" not in text and "latest_metrics" not in text, path.name
        if not sql_room:
            assert "SELECT " not in text, path.name
        else:
            assert "mode=ro" in text and not any(
                w in text for w in ("INSERT ", "UPDATE ", "DELETE ", "CREATE ", "DROP ")), \
                "the direct reader only reads"


def test_the_front_door_and_analysis_import_no_torch_or_ray() -> None:
    import subprocess
    import sys

    code = ("import sys, study.cli, analysis; "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


@pytest.mark.parametrize("modules", [
    "trainables.config, trainables.errors", "study.spec, study._tracking, study._folder, analysis",
    "study.cli, study._ui, study._sync", "analysis._commands, analysis._replay",
    # the driver's side of run/confirm/sync (the trials import torch in their own workers)
    "study.runner, study._commands, study._experiments, study._resume, study._callbacks",
    "study._searcher, study._confirm, study._tune, trainables.pruning",
    "analysis._reproduce, trainables.reproduce, trainables.checkpoint"])
def test_the_config_the_study_and_the_analysis_import_no_torch(modules: str) -> None:
    """Transitively: what `mistudy ui`, `rank`, a spec check and the tracker import (a torch
    import costs seconds and gigabytes on a driver that trains nothing)."""
    import subprocess
    import sys

    code = f"import sys, {modules}; assert 'torch' not in sys.modules, sorted(" \
           f"m for m in sys.modules if m.startswith(('trainables', 'study', 'analysis')))"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_trainable_handed_to_tune_leaves_the_driver_torch_free() -> None:
    """The driver builds the trainable and Tune pickles it to register it: the loop (torch,
    ~2.7 CPU-s a command) is imported inside the trainable, in the trial workers only."""
    import subprocess
    import sys

    code = ("import sys, ray.cloudpickle as cp, study._tune as t; "
            "cp.dumps(t._trainable(1.0, 0.0)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_the_model_names_are_the_models_built() -> None:
    from trainables.models import MODELS
    from trainables.names import MODEL_NAMES

    assert sorted(MODELS) == sorted(MODEL_NAMES)
