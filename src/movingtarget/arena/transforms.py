"""Near-duplicate transforms: how one benign item legitimately reaches a model twice
in slightly different bytes (re-encoded, rounded, shifted by a pixel, brighter, or
rescaled: the same e-mail with a few words added or cut).

Each transform maps a batch ``(n, ...)`` to a batch of the same shape, batch-first,
keeping values inside the pool's range ``[lo, hi]``. Flat inputs whose size is a
perfect square (8x8 digits as 64 values) are treated as square images for shifts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError

Transform = Callable[[NDArray[np.float32], np.random.Generator, float, float], NDArray[np.float32]]

#: Levels of the coarse rounding transform.
LEVELS = 32
#: Largest brightness change, as a share of the value range.
BRIGHTNESS = 0.05
#: Largest relative change of the rescale transform.
RESCALE = 0.05


def requantize(
    x: NDArray[np.float32], rng: np.random.Generator, lo: float, hi: float
) -> NDArray[np.float32]:
    """Re-encode to 8 bits: round to the nearest of 256 levels of ``[lo, hi]``."""
    return _round_levels(x, 256, lo, hi)


def levels(
    x: NDArray[np.float32], rng: np.random.Generator, lo: float, hi: float
) -> NDArray[np.float32]:
    """Round to :data:`LEVELS` levels (a coarser encoding)."""
    return _round_levels(x, LEVELS, lo, hi)


def _round_levels(x: NDArray[np.float32], k: int, lo: float, hi: float) -> NDArray[np.float32]:
    span = (hi - lo) or 1.0
    step = span / (k - 1)
    return (np.rint((x - lo) / step) * step + lo).astype(np.float32)


def image_view(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """``x`` as images ``(n, C, H, W)``: 4-d as is, 3-d as one channel, 2-d when the
    size is a perfect square; else :class:`ConfigError`."""
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x[:, None]
    side = math.isqrt(x.shape[1]) if x.ndim == 2 else 0
    if x.ndim != 2 or side * side != x.shape[1]:
        raise ConfigError(f"shift: inputs of shape {x.shape[1:]} are not images")
    return x.reshape(len(x), 1, side, side)


def shift(
    x: NDArray[np.float32], rng: np.random.Generator, lo: float, hi: float
) -> NDArray[np.float32]:
    """Shift each image by one pixel (up, down, left or right), filling with the edge."""
    img = image_view(x)
    out = np.empty_like(img)
    way = rng.integers(0, 4, len(img))
    for w in range(4):
        rows = way == w
        if not rows.any():
            continue
        axis = 2 + w // 2
        step = 1 if w % 2 == 0 else -1
        moved = np.roll(img[rows], step, axis=axis)
        # np.roll wraps around; put the edge row or column back instead
        edge: list[slice | int] = [slice(None)] * 4
        edge[axis] = 0 if step == 1 else -1
        src: list[slice | int] = [slice(None)] * 4
        src[axis] = 1 if step == 1 else -2
        moved[tuple(edge)] = moved[tuple(src)]
        out[rows] = moved
    return out.reshape(x.shape)


def brightness(
    x: NDArray[np.float32], rng: np.random.Generator, lo: float, hi: float
) -> NDArray[np.float32]:
    """Add one random brightness change per item (up to :data:`BRIGHTNESS` of the range)."""
    span = (hi - lo) or 1.0
    delta = rng.uniform(-BRIGHTNESS, BRIGHTNESS, len(x)) * span
    moved = x + delta.reshape((-1,) + (1,) * (x.ndim - 1)).astype(np.float32)
    return np.clip(moved, lo, hi).astype(np.float32)


def rescale(
    x: NDArray[np.float32], rng: np.random.Generator, lo: float, hi: float
) -> NDArray[np.float32]:
    """Multiply each item by one random factor in ``[1 - RESCALE, 1 + RESCALE]``.

    Scale-free, so it suits features that do not share one range: a Spambase e-mail
    re-sent with a few words added or cut has every word and character frequency
    (100 x count / length) scaled by the same factor. On an image it is a contrast
    change. Values stay inside ``[lo, hi]``.
    """
    factor = rng.uniform(1 - RESCALE, 1 + RESCALE, len(x))
    moved = x * factor.reshape((-1,) + (1,) * (x.ndim - 1)).astype(np.float32)
    return np.clip(moved, lo, hi).astype(np.float32)


#: Transforms by name, as configs write them.
TRANSFORMS: dict[str, Transform] = {
    "requantize": requantize,
    "levels": levels,
    "shift": shift,
    "brightness": brightness,
    "rescale": rescale,
}


def check_transforms(names: Sequence[str], where: str) -> tuple[str, ...]:
    """The names as a tuple; a :class:`ConfigError` names an unknown one."""
    out = tuple(names)
    for name in out:
        if name not in TRANSFORMS:
            raise ConfigError(
                f"{where}: unknown transform {name!r}; choose from {', '.join(TRANSFORMS)}"
            )
    return out


class NearDuplicates:
    """Applies a random one of ``names`` to each item of a batch.

    Examples
    --------
    >>> import numpy as np
    >>> nd = NearDuplicates(["requantize"], lo=0.0, hi=1.0)
    >>> x = np.full((2, 4), 0.3001, np.float32)
    >>> np.round(nd.apply(x, np.random.default_rng(0)) * 255).tolist()
    [[77.0, 77.0, 77.0, 77.0], [77.0, 77.0, 77.0, 77.0]]
    """

    def __init__(self, names: Sequence[str], *, lo: float, hi: float) -> None:
        self.names = check_transforms(names, "near-duplicates")
        if not self.names:
            raise ConfigError("near-duplicates: name at least one transform")
        self.lo, self.hi = float(lo), float(hi)

    def apply(self, x: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
        """Transformed copies of the rows of ``x``."""
        out = np.array(x, dtype=np.float32, copy=True)
        if len(x) == 0:
            return out
        pick = rng.integers(0, len(self.names), len(x))
        for i, name in enumerate(self.names):
            rows = pick == i
            if rows.any():
                out[rows] = TRANSFORMS[name](out[rows], rng, self.lo, self.hi)
        return out
