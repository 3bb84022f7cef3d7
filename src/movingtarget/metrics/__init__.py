"""The metrics box: measured ``r``, ``r~``, abstention, query-trajectory features,
analytic predictions, and the diversity of a model pool."""

from movingtarget.metrics.analytic import (
    NONE,
    Prediction,
    per_input_success,
    predict,
    test_set_prediction,
    verdict,
)
from movingtarget.metrics.diversity import PoolDiversity, disagreement, pool_diversity
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
    "PoolDiversity",
    "Prediction",
    "Trajectory",
    "attack_metrics",
    "cumulative_r_tilde",
    "disagreement",
    "first_detection",
    "natural_error",
    "per_input_success",
    "pool_diversity",
    "predict",
    "repeat_mask",
    "test_set_prediction",
    "trajectories",
    "trajectory_metrics",
    "verdict",
]
