"""Rank schedules by train–test gap closure against matched cross-entropy baselines, export
the best configs, draw the figures. See :mod:`analysis._rank` for the definitions."""

from ._bundle import is_bundle, read_bundle
from ._commands import (
    Analysis,
    analyze,
    confirm_plan,
    confirmation,
    export_configs,
    format_ranking,
    log_ranking,
    write_bundle,
    write_report,
)
from ._confirm import ConfirmInfo, best_confirmed_line, format_confirm, get_confirm_info
from ._edges import EdgeInfo, format_edges, get_edge_info
from ._errors import AnalysisError, StudyData
from ._figures import (
    get_pareto_info,
    get_trajectory_info,
    get_transition_info,
    plot_grad_norm,
    plot_pareto,
    plot_trajectories,
    plot_transitions,
)
from ._findings import update_page, write_findings
from ._importance import ImportanceInfo, format_importance, get_importance_info
from ._load import load_study, optuna_trials, study_settings
from ._paths import PathsInfo, format_paths, get_paths_info, region_of
from ._rank import (
    MATCH_KEYS,
    bootstrap_ci,
    match_baselines,
    pareto_front,
    rank_schedules,
    trial_table,
)
from ._replay import ReplayInfo, format_replay, get_replay_info
from ._reproduce import (
    CLAIMS,
    NEEDS,
    FigureInfo,
    FigureResult,
    draw_reproduction,
    get_figure_info,
    plot_figure,
)

__all__ = [
    "Analysis", "analyze", "confirm_plan", "confirmation", "export_configs",
    "format_ranking", "log_ranking", "write_report",
    "get_pareto_info", "get_trajectory_info", "get_transition_info", "plot_grad_norm",
    "plot_pareto", "plot_trajectories", "plot_transitions",
    "AnalysisError", "StudyData", "load_study", "optuna_trials", "study_settings",
    "is_bundle", "read_bundle", "write_bundle", "ConfirmInfo", "format_confirm",
    "best_confirmed_line",
    "get_confirm_info", "update_page", "write_findings", "ImportanceInfo", "format_importance",
    "get_importance_info", "EdgeInfo", "format_edges", "get_edge_info",
    "ReplayInfo", "format_replay", "get_replay_info", "PathsInfo", "format_paths",
    "get_paths_info", "region_of",
    "CLAIMS", "NEEDS", "FigureInfo", "FigureResult", "draw_reproduction", "get_figure_info",
    "plot_figure",
    "MATCH_KEYS", "bootstrap_ci", "match_baselines", "pareto_front", "rank_schedules",
    "trial_table",
]
