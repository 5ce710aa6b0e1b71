"""What a study prints when it ends: its ranking as ``mistudy rank`` prints it (a closure
objective) or the configurations Optuna was told (any other), and the MLflow link."""

from __future__ import annotations

from typing import Any

from ._folder import Study

__all__ = ["print_summary"]


def print_summary(trials: list[dict[str, Any]], study: Study, analysis: Any) -> None:
    """``analysis``: the ranking the run's final sync computed (``analysis.Analysis``), or
    None when nothing could be ranked."""
    from ._sync import best_trials

    meta, spec, out = study.meta, study.spec, study.paths.root
    obj = spec.objectives[0]
    errors = sum(1 for t in trials if t["error"])
    print(f"\nstudy {spec.name!r}: {len(trials)} trials ({errors} failed) in {out}")
    guards = " under the guards" if spec.guards.active else ""
    # a closure objective: the ranking says it (mistudy rank's columns); any other objective:
    # what Optuna was told, then the ranking by closure beside it
    if not (obj.relative and _print_ranking(analysis, spec.last_k, len(spec.seeds), guards)):
        print(f"best configurations by {obj.metric} ({obj.mode}; selected on validation"
              f"{guards}; mean over {len(spec.seeds)} seed(s) of the last {spec.last_k} "
              f"epochs; test only read, in mistudy rank):")
        for row in best_trials(study):
            flag = "" if row["feasible"] else "  [infeasible: guard broken]"
            print(f"  #{row['number']:<3} {_params_text(row['params'])}  "
                  f"{obj.metric}={row['value']:.4f}{flag}")
        if not obj.relative:
            _print_ranking(analysis, spec.last_k, len(spec.seeds), guards)
    uri = meta["tracking_uri"]
    if uri.startswith(("http://", "https://")):
        from trainables.studyfolder import redact

        from ._ui import runs_link
        from ._view import experiment_id

        print(f"MLflow UI: {runs_link(redact(uri), experiment_id(meta), shared=True)}")
    else:
        print(f"MLflow UI:  mistudy ui --out {out}")


def _print_ranking(a: Any, last_k: int, seeds: int, guards: str) -> bool:
    """The ranking as ``mistudy rank`` prints it (its 120 columns, its range-edge warnings);
    False when nothing can be ranked yet (no baseline, no finished trial: rank says why)."""
    from analysis import format_edges, format_ranking

    if a is None:
        return False
    print(f"ranking by {a.selection.metric} (selected on validation{guards}; mean over {seeds} "
          f"seed(s) of the last {last_k} epochs; test only read):")
    print(format_ranking(a.ranking, "table", a.selection.metric))
    for line in format_edges(a.edges):
        print(f"warning: {line}")
    return True


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else
                    f"{k.split('.')[-1]}={v}" for k, v in params.items())


