"""Calibration: choose approximate-memory thresholds on benign data for a target
benign false-match rate, and report the rate achieved on held-out benign traffic.

The false-match rate is measured the way a deployment meets it: benign queries
arrive one after another (distinct items, in a seeded order), and a query *falsely
matches* when the memory calls it a repeat of an earlier, different one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError
from movingtarget.memory._keys import occurrences_before
from movingtarget.memory.fingerprints.neighbours import Encoder, NeighbourIndex, stream_nearest
from movingtarget.memory.fingerprints.robust import RobustFingerprint

#: Default target benign false-match rate (0.1 %).
TARGET_RATE = 0.001
#: Bucket widths tried for robust fingerprints, widest (most noise-tolerant) first.
WIDTHS = (0.16, 0.14, 0.12, 0.1, 0.08, 0.06, 0.04)


@dataclass(frozen=True)
class Calibration:
    """A chosen threshold with the false-match rate it targets and achieves.

    Examples
    --------
    >>> c = Calibration("robust", "width", 0.1, 0.001, 0.0, 1000, 0.0, 0.0, 500)
    >>> print(c.describe())  # doctest: +NORMALIZE_WHITESPACE
    robust: width = 0.1 for false matches <= 0.100 % (calibration 0.000 % of 1000;
    held-out 0.000 % +- 0.000 of 500)
    """

    kind: str
    parameter: str
    value: float
    target_rate: float
    calibration_rate: float
    n_calibration: int
    heldout_rate: float
    heldout_se: float
    n_heldout: int

    def describe(self) -> str:
        """One line for reports."""
        held = (
            f"held-out {100 * self.heldout_rate:.3f} % +- {100 * self.heldout_se:.3f} "
            f"of {self.n_heldout}"
            if self.n_heldout
            else "no held-out data"
        )
        return (
            f"{self.kind}: {self.parameter} = {self.value:.4g} for false matches <= "
            f"{100 * self.target_rate:.3f} % (calibration {100 * self.calibration_rate:.3f} % "
            f"of {self.n_calibration}; {held})"
        )

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain dict (for JSON)."""
        return asdict(self)


def _rate_se(hits: NDArray[np.bool_]) -> tuple[float, float]:
    n = len(hits)
    if n == 0:
        return float("nan"), float("nan")
    p = float(hits.mean())
    return p, math.sqrt(p * (1 - p) / n)


def _check(target: float, x: NDArray[np.generic]) -> None:
    if not 0 < target < 1:
        raise ConfigError(f"calibration: target_rate must be in (0, 1), got {target}")
    if len(x) < 2:
        raise ConfigError("calibration: needs at least 2 benign queries")


def _distinct(x: NDArray[np.generic], seed: int) -> NDArray[np.float32]:
    """Benign queries in a seeded order, exact duplicates removed (those are true repeats)."""
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    _, first = np.unique(flat, axis=0, return_index=True)
    keep = np.sort(first)
    order = np.random.default_rng([seed, 0xCA1]).permutation(len(keep))
    return np.asarray(x, dtype=np.float32)[keep[order]]


def robust_stream_matches(fp: RobustFingerprint, x: NDArray[np.generic]) -> NDArray[np.bool_]:
    """Which queries of the stream ``x`` match an earlier one (fresh memory), exactly as a
    store sees them: a band key counts when it was observed before."""
    keys = fp.fingerprint(x)
    seen = np.empty(keys.shape, dtype=bool)
    for b in range(keys.shape[1]):
        seen[:, b] = occurrences_before(keys[:, b]) > 0
    return fp.matched(seen)


def calibrate_robust(
    x_calibration: NDArray[np.generic],
    x_heldout: NDArray[np.generic] | None = None,
    *,
    target_rate: float = TARGET_RATE,
    widths: Sequence[float] = WIDTHS,
    seed: int = 0,
    **params: object,
) -> tuple[RobustFingerprint, Calibration]:
    """The widest bucket ``width`` whose false-match rate on ``x_calibration`` is at most
    ``target_rate`` (wider buckets tolerate more noise); ``params`` go to
    :class:`RobustFingerprint`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((300, 64), dtype=np.float32)
    >>> fp, cal = calibrate_robust(x[:200], x[200:], secret=b"s")
    >>> cal.parameter, cal.calibration_rate <= cal.target_rate
    ('width', True)
    """
    _check(target_rate, x_calibration)
    cal = _distinct(x_calibration, seed)
    if not widths:
        raise ConfigError("calibration: widths is empty")
    chosen: tuple[RobustFingerprint, float] | None = None
    for width in sorted(widths, reverse=True):
        fp = RobustFingerprint(width=float(width), **params)  # type: ignore[arg-type]
        rate = float(robust_stream_matches(fp, cal).mean())
        if rate <= target_rate:
            chosen = (fp, rate)
            break
    if chosen is None:
        raise ConfigError(
            f"calibration: no width in {tuple(widths)} reaches a false-match rate of "
            f"{target_rate} on the benign data; add narrower widths or more rows"
        )
    return chosen[0], measure_robust(chosen[0], x_calibration, x_heldout, target_rate, seed)


def measure_robust(
    fp: RobustFingerprint,
    x_calibration: NDArray[np.generic],
    x_heldout: NDArray[np.generic] | None = None,
    target_rate: float = TARGET_RATE,
    seed: int = 0,
) -> Calibration:
    """The false-match rates of a fixed robust fingerprint (no threshold is chosen).

    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((300, 64), dtype=np.float32)
    >>> measure_robust(RobustFingerprint(width=5.0, secret=b"s"), x).calibration_rate > 0.5
    True
    """
    _check(target_rate, x_calibration)
    cal = _distinct(x_calibration, seed)
    rate = float(robust_stream_matches(fp, cal).mean())
    held = _distinct(x_heldout, seed + 1) if x_heldout is not None and len(x_heldout) else None
    h_rate, h_se = _rate_se(robust_stream_matches(fp, held)) if held is not None else (0.0, 0.0)
    return Calibration(
        "robust", "width", fp.width, target_rate, rate, len(cal), h_rate, h_se,
        0 if held is None else len(held),
    )  # fmt: skip


def calibrate_radius(
    encoder: Encoder,
    x_calibration: NDArray[np.generic],
    x_heldout: NDArray[np.generic] | None = None,
    *,
    target_rate: float = TARGET_RATE,
    seed: int = 0,
    radius: float | None = None,
) -> Calibration:
    """The neighbour radius: the largest distance at which at most ``target_rate`` of a
    benign stream lies that close to an earlier, different benign query (or, with
    ``radius`` given, the false-match rates of that fixed radius).

    Examples
    --------
    >>> import numpy as np
    >>> from movingtarget.memory.fingerprints.neighbours import RandomProjectionEncoder
    >>> x = np.random.default_rng(0).random((300, 16), dtype=np.float32)
    >>> cal = calibrate_radius(RandomProjectionEncoder(16), x[:200], x[200:])
    >>> cal.parameter, cal.value > 0, cal.calibration_rate <= 0.001
    ('radius', True, True)
    """
    _check(target_rate, x_calibration)
    cal = _distinct(x_calibration, seed)
    emb = encoder.encode(cal)
    nearest = stream_nearest(NeighbourIndex(emb.shape[1]), emb)[1:]  # the first has no past
    ranked = np.sort(nearest)
    allowed = math.floor(target_rate * len(ranked))
    if radius is None:
        # strictly below the (allowed+1)-th smallest distance: exactly `allowed` matches
        top = ranked[allowed] if allowed < len(ranked) else ranked[-1]
        radius = float(np.nextafter(top, 0.0))
    rate = float((nearest <= radius).mean())
    h_rate = h_se = 0.0
    n_held = 0
    if x_heldout is not None and len(x_heldout) > 1:
        held = _distinct(x_heldout, seed + 1)
        h_emb = encoder.encode(held)
        h_near = stream_nearest(NeighbourIndex(h_emb.shape[1]), h_emb)[1:]
        h_rate, h_se = _rate_se(h_near <= radius)
        n_held = len(h_near)
    return Calibration(
        "neighbours", "radius", radius, target_rate, rate, len(nearest), h_rate, h_se, n_held
    )
