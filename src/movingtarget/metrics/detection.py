"""How well a detector's score separates attacked inputs from benign ones.

The ROC AUC is the Mann-Whitney probability that an attacked input scores above a
benign one (ties count half; scikit-learn computes it), with the Hanley & McNeil (1982)
standard error, so a claim such as "AUC above 0.5 by more than 3 s.e." can be checked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Separation:
    """ROC AUC of attacked against benign scores, its standard error, and the share
    of each above a threshold (the detection and false-alarm rates there).

    Examples
    --------
    >>> s = separation(np.array([0.1, 0.2, 0.3]), np.array([0.25, 0.4]), threshold=0.35)
    >>> round(s.auc, 3), s.n_attacked, s.n_benign, s.detected, round(s.false_alarms, 3)
    (0.833, 2, 3, 0.5, 0.0)
    """

    auc: float
    se: float
    n_attacked: int
    n_benign: int
    detected: float
    false_alarms: float

    def row(self) -> dict[str, Any]:
        """Plain JSON values."""
        return asdict(self)


def auc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982): with Q1 = A / (2 - A) and Q2 = 2 A^2 / (1 + A),
    SE^2 = [A (1 - A) + (n_pos - 1)(Q1 - A^2) + (n_neg - 1)(Q2 - A^2)] / (n_pos n_neg).

    >>> round(auc_se(0.5, 100, 100), 4)
    0.0409
    """
    if n_pos < 1 or n_neg < 1:
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)
    return math.sqrt(max(var, 0.0) / (n_pos * n_neg))


def separation(
    benign: NDArray[np.floating[Any]],
    attacked: NDArray[np.floating[Any]],
    threshold: float = math.inf,
) -> Separation:
    """AUC (with its s.e.) of ``attacked`` scores against ``benign`` ones; higher
    scores mean "more likely attacked". Empty groups give NaN."""
    from sklearn.metrics import roc_auc_score

    neg = np.asarray(benign, dtype=np.float64).ravel()
    pos = np.asarray(attacked, dtype=np.float64).ravel()
    if len(neg) == 0 or len(pos) == 0:
        auc = float("nan")
    else:
        labels = np.concatenate([np.zeros(len(neg)), np.ones(len(pos))])
        auc = float(roc_auc_score(labels, np.concatenate([neg, pos])))
    return Separation(
        auc=auc,
        se=auc_se(auc, len(pos), len(neg)) if np.isfinite(auc) else float("nan"),
        n_attacked=len(pos),
        n_benign=len(neg),
        detected=float((pos > threshold).mean()) if len(pos) else float("nan"),
        false_alarms=float((neg > threshold).mean()) if len(neg) else float("nan"),
    )
