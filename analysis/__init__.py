"""Rank schedules by train–test gap closure against matched cross-entropy baselines, export
the best configs, draw the figures. See :mod:`analysis._rank` for the definitions."""

from ._commands import (
    Analysis,
    analyze,
    confirm_plan,
    confirmation,
    export_configs,
    format_ranking,
    log_ranking,
    write_report,
)
from ._figures import (
    get_pareto_info,
    get_trajectory_info,
    get_transition_info,
    plot_grad_norm,
    plot_pareto,
    plot_trajectories,
    plot_transitions,
)
from ._load import AnalysisError, StudyData, load_study
from ._rank import (
    MATCH_KEYS,
    bootstrap_ci,
    match_baselines,
    pareto_front,
    rank_schedules,
    trial_table,
)

__all__ = [
    "Analysis", "analyze", "confirm_plan", "confirmation", "export_configs",
    "format_ranking", "log_ranking", "write_report",
    "get_pareto_info", "get_trajectory_info", "get_transition_info", "plot_grad_norm",
    "plot_pareto", "plot_trajectories", "plot_transitions",
    "AnalysisError", "StudyData", "load_study",
    "MATCH_KEYS", "bootstrap_ci", "match_baselines", "pareto_front", "rank_schedules",
    "trial_table",
]
