"""The metrics box: measured ``r``, ``r~``, abstention, query-trajectory features, and
analytic predictions."""

from movingtarget.metrics.analytic import (
    NONE,
    Prediction,
    per_input_success,
    predict,
    test_set_prediction,
    verdict,
)
from movingtarget.metrics.laws import FirstMistake, FreshOnly
from movingtarget.metrics.measured import (
    AttackMetrics,
    attack_metrics,
    cumulative_r_tilde,
    natural_error,
    repeat_mask,
)
from movingtarget.metrics.trajectory import (
    Trajectory,
    first_detection,
    trajectories,
    trajectory_metrics,
)

__all__ = [
    "NONE",
    "AttackMetrics",
    "FirstMistake",
    "FreshOnly",
    "Prediction",
    "Trajectory",
    "attack_metrics",
    "cumulative_r_tilde",
    "first_detection",
    "natural_error",
    "per_input_success",
    "predict",
    "repeat_mask",
    "test_set_prediction",
    "trajectories",
    "trajectory_metrics",
    "verdict",
]
