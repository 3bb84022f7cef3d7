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
from movingtarget.experiment.runner import Pools, Results, Task, make_pools, run_experiment

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
    "make_pools",
    "parse_config",
    "run_experiment",
]
