"""Experiments: configs naming every box, and the runner that fills the results folder."""

from movingtarget.experiment.config import (
    BUILTIN_CONFIGS,
    ComponentSpec,
    DefenseSpec,
    ExperimentConfig,
    apply_overrides,
    load_config,
    load_raw,
    parse_config,
)
from movingtarget.experiment.runner import (
    Pools,
    Results,
    Task,
    load_results,
    make_pools,
    record_then,
    run_experiment,
)

__all__ = [
    "BUILTIN_CONFIGS",
    "ComponentSpec",
    "DefenseSpec",
    "ExperimentConfig",
    "Pools",
    "Results",
    "Task",
    "apply_overrides",
    "load_config",
    "load_raw",
    "load_results",
    "make_pools",
    "parse_config",
    "record_then",
    "run_experiment",
]
