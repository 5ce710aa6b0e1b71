"""``mistudy confirm``: the search's top schedules and their matched baselines rerun on seeds
the search never used, as one more phase of the same study folder.

By default each fresh seed is paired with a fresh split draw (``data_seed``) the study never
used, and every schedule's matched baseline runs on the same seed and draw: over split draws
the findings measured more noise (sd 0.032 nats in a baseline's test − validation CE) than over
model seeds (sd 0.016), so a confirmation on the study's own draw would re-measure that draw's
offset. ``same_split`` keeps the study's draw (the confirmation of earlier versions).

The plan (which schedules, which seeds and draws, every trial config) is written to
``confirm.json`` before anything runs, so a killed confirmation resumes the same plan (running
``confirm`` again on the folder, or ``--resume``). Its Tune experiment is
``ray/<name>-confirm``; its MLflow runs go to the study's experiment under the same parent,
tagged ``mistudy.phase=confirm``.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from trainables.fileio import atomic_write_text
from trainables.records import CONFIRM_PHASE, PHASE_KEY

from ._folder import Study, StudyError
from ._searcher import baseline_config
from .spec import StudySpec

__all__ = ["ListSearcher", "plan_confirm"]


class ListSearcher(Searcher):
    """Suggests a fixed list of configs, in order; its state is JSON."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        super().__init__()
        self.pending: deque[dict[str, Any]] = deque(configs)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> Any:
        return self.pending.popleft() if self.pending else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        return None

    def save(self, checkpoint_path: str) -> None:
        atomic_write_text(Path(checkpoint_path), json.dumps({"pending": list(self.pending)}))

    def restore(self, checkpoint_path: str) -> None:
        self.pending = deque(json.loads(Path(checkpoint_path).read_text("utf-8"))["pending"])


def fresh_seeds(spec: StudySpec, used: set[int], n: int) -> list[int]:
    """``n`` seeds no search trial used: the next ones after the largest used."""
    start = max(used | set(spec.seeds)) + 1
    return list(range(start, start + n))


def fresh_data_seeds(spec: StudySpec, used: set[int], n: int) -> list[int]:
    """``n`` split draws no search trial used: the next ones after the largest used."""
    start = max(used | {int(spec.fixed.get("data_seed", 0))}) + 1
    return list(range(start, start + n))


def _schedules(out: Path, top: int) -> tuple[Any, list[dict[str, Any]]]:
    """The search's ranking (selected on validation) and its top feasible schedules."""
    from analysis import AnalysisError, analyze

    try:
        a = analyze(str(out))
    except AnalysisError as exc:
        raise StudyError(f"nothing to confirm yet: {exc}") from None
    metric = a.selection.metric
    ok = a.ranking[a.ranking.feasible & a.ranking[metric].notna()]
    if ok.empty:
        raise StudyError(f"no schedule of {out} meets the study's guards with a defined "
                         f"{metric}: nothing to confirm")
    return a, ok.head(top).to_dict("records")


def plan_confirm(out: Path, spec: StudySpec, top: int, seeds: int,
                 data_seeds: list[int] | None = None, same_split: bool = False
                 ) -> dict[str, Any]:
    """The confirmation plan: top schedules × fresh seeds (each paired with a fresh split draw
    unless ``same_split``), and their matched baselines on the same seeds and draws."""
    a, rows = _schedules(out, top)
    used = {int(s) for s in a.trials["p.seed"] if s == s}
    new_seeds = fresh_seeds(spec, used, seeds)
    if same_split:
        draws = [int(spec.fixed.get("data_seed", 0))] * seeds
    else:
        used_draws = {int(d) for d in a.trials.get("p.data_seed", []) if d == d}
        draws = data_seeds or fresh_data_seeds(spec, used_draws, seeds)
        if len(draws) != seeds:
            raise StudyError(f"--data-seeds {','.join(map(str, draws))}: {len(draws)} draws "
                             f"for {seeds} seeds -- allowed: one split draw per fresh seed")
        clash = sorted(set(draws) & (used_draws | {int(spec.fixed.get("data_seed", 0))}))
        if clash:
            raise StudyError(f"--data-seeds: draw {clash[0]} is the study's own -- allowed: "
                             f"draws the search never used (or --same-split)")
    pairs = list(zip(new_seeds, draws, strict=True))
    configs, batch_sizes = [], []
    schedules = []
    for row in rows:
        cfg = a.trials[a.trials.run_id == row["run_ids"][0]].iloc[0]["config"]
        searched = {"transition": cfg["transition"], "alpha": float(cfg["alpha"]),
                    "batch_size": int(cfg["batch_size"])}
        schedules.append({"schedule": row["schedule"], **searched})
        batch_sizes.append(searched["batch_size"])
        configs += [{**spec.fixed, **searched, "seed": s, "data_seed": d,
                     PHASE_KEY: CONFIRM_PHASE} for s, d in pairs]
    baselines = [{**spec.fixed, **baseline_config(spec, b, s), "data_seed": d,
                  PHASE_KEY: CONFIRM_PHASE}
                 for b in sorted(set(batch_sizes)) for s, d in pairs]
    return {"version": 2, "top": top, "seeds": new_seeds, "data_seeds": draws,
            "same_split": same_split, "metric": a.selection.metric,
            "max_acc_drop": a.selection.max_acc_drop, "schedules": schedules,
            "configs": baselines + configs}


def _ints(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                       and x >= 0 for x in v)


def plan_problem(plan: Any, spec: StudySpec) -> str | None:
    """What makes a stored plan unusable (read like a spec: shape, seeds, configs), else
    None. A plan whose seeds the search used would confirm nothing."""
    if not isinstance(plan, dict):
        return "it is not a JSON object"
    if not (isinstance(plan.get("top"), int) and _ints(plan.get("seeds")) and plan["seeds"]):
        return "'top' or 'seeds' is missing or not integers"
    if plan.get("data_seeds") is not None and not (
            _ints(plan["data_seeds"]) and len(plan["data_seeds"]) == len(plan["seeds"])):
        return "'data_seeds' is not one integer per seed"
    used = sorted(set(plan["seeds"]) & set(spec.seeds))
    if used:
        return f"its seeds {used} are the search's own: nothing would be confirmed"
    schedules, configs = plan.get("schedules"), plan.get("configs")
    if not (isinstance(schedules, list) and schedules and all(
            isinstance(s, dict) and isinstance(s.get("schedule"), str) for s in schedules)):
        return "'schedules' is not a list of schedules"
    if not (isinstance(configs, list) and configs and all(
            isinstance(c, dict) and c.get(PHASE_KEY) == CONFIRM_PHASE
            and c.get("seed") in plan["seeds"] for c in configs)):
        return "'configs' is not a list of confirmation configs on the plan's seeds"
    if not isinstance(plan.get("metric"), str):
        return "'metric' is missing"
    return None


def load_or_plan(study: Study, top: int | None, seeds: int | None,
                 data_seeds: list[int] | None = None, same_split: bool = False
                 ) -> dict[str, Any]:
    """The stored plan (a rerun resumes it), or a new one written before anything runs
    (``study``: as the command opened it)."""
    out, spec, path = study.paths.root, study.spec, study.paths.confirm_plan
    if path.is_file():
        problem: str | None
        try:
            plan = json.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            plan, problem = None, f"it does not read as JSON ({type(exc).__name__})"
        else:
            problem = plan_problem(plan, spec)
        if problem or plan is None:
            raise StudyError(f"{path} is damaged: {problem}; move it aside to plan the "
                             f"confirmation again")
        stored_draws = plan.get("data_seeds")
        if (top is not None and top != plan["top"]) or \
                (seeds is not None and seeds != len(plan["seeds"])) or \
                (data_seeds is not None and data_seeds != stored_draws) or \
                (same_split and not plan.get("same_split", stored_draws is None)):
            raise StudyError(f"{out} holds a confirmation of the top {plan['top']} on "
                             f"{len(plan['seeds'])} seeds (split draws "
                             f"{stored_draws or 'of the study'}); rerun without --top/--seeds/"
                             f"--data-seeds/--same-split (or with those) to resume it")
        return plan
    plan = plan_confirm(out, spec, top or 3, seeds or 3, data_seeds, same_split)
    atomic_write_text(path, json.dumps(plan, indent=1))
    return plan
