"""The metrics box: measured ``r``, ``r~``, abstention, and analytic predictions."""

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

__all__ = [
    "NONE",
    "AttackMetrics",
    "FirstMistake",
    "FreshOnly",
    "Prediction",
    "attack_metrics",
    "cumulative_r_tilde",
    "natural_error",
    "per_input_success",
    "predict",
    "repeat_mask",
    "test_set_prediction",
    "verdict",
]
