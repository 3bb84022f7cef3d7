"""Model resilience (Papernot & McDaniel 2016): how much perturbation it takes to move
an input out of its class, summarized as a distribution.

The per-input minimal perturbations come from :mod:`movingtarget.attacks.perturb.minimal`;
this module only summarizes them (numpy, no ART): over correctly classified inputs, the
median and 10th percentile (inputs whose class no perturbation within the bound
changed count as ``inf``: they are the most resilient, so they stay in the ranks), the
share below a stated ``eps`` (the inputs an attack of that size takes), and a
distribution-free standard error of the median.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ResilienceSummary:
    """The distribution of minimal perturbations over one group of inputs.

    Examples
    --------
    >>> import numpy as np
    >>> s = summarize(np.array([0.1, 0.2, 0.3, 0.4, np.inf]), eps=0.25)
    >>> s.n, s.median, s.below_eps, s.not_found
    (5, 0.3, 0.4, 1)
    """

    n: int
    median: float
    p10: float
    below_eps: float
    eps: float
    median_se: float
    not_found: int

    def row(self) -> dict[str, Any]:
        """The summary as a plain dict (JSON and tables)."""
        return asdict(self)


def median_se(values: NDArray[np.float64]) -> float:
    """A distribution-free standard error of the median: half the spread between the
    order statistics at ranks ``n/2 ± sqrt(n)/2`` (the ±1σ interval of the median's
    rank, which is binomial(n, 1/2)). ``inf`` when that interval reaches an ``inf``."""
    n = len(values)
    if n < 2:
        return float("inf")
    v = np.sort(values)
    half = np.sqrt(n) / 2
    lo = int(np.clip(np.floor(n / 2 - half), 0, n - 1))
    hi = int(np.clip(np.ceil(n / 2 + half), 0, n - 1))
    if not np.isfinite(v[hi]):
        return float("inf")
    return float((v[hi] - v[lo]) / 2)


def summarize(values: NDArray[np.floating[Any]], *, eps: float) -> ResilienceSummary:
    """Summary of minimal perturbations ``values`` (``inf``: none found)."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        nan = float("nan")
        return ResilienceSummary(0, nan, nan, nan, float(eps), nan, 0)
    return ResilienceSummary(
        n=len(v),
        median=float(np.quantile(v, 0.5, method="inverted_cdf")),
        p10=float(np.quantile(v, 0.1, method="inverted_cdf")),
        below_eps=float((v <= eps).mean()),
        eps=float(eps),
        median_se=median_se(v),
        not_found=int((~np.isfinite(v)).sum()),
    )


def per_class(
    values: NDArray[np.floating[Any]], y: NDArray[np.integer[Any]], *, eps: float
) -> dict[int, ResilienceSummary]:
    """:func:`summarize` for each true class present in ``y``."""
    yy = np.asarray(y)
    return {int(c): summarize(np.asarray(values)[yy == c], eps=eps) for c in np.unique(yy)}
