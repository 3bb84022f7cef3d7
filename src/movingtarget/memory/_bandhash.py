"""The robust fingerprint's per-value steps, compiled with numba: reading queries onto
the grid, and turning projections into band keys.

Both are short arithmetic on each value that numpy would run as a dozen whole-array
passes (each with its own temporary); one loop does them in one pass. The projection
itself stays a BLAS matrix product.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from movingtarget._numba import compiled
from movingtarget.memory.fingerprints import _M1, _M2

_MIX1, _MIX2 = np.uint64(_M1), np.uint64(_M2)
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)

FINITE, NOT_FINITE, TOO_LARGE = 0, 1, 2


@compiled("int64(float32[:, ::1], float32, float32, float32[:, ::1])")
def to_grid(x: Any, scale: np.float32 | float, limit: float, grid: Any) -> int:
    """Write ``rint(x * scale)`` to ``grid``; return NOT_FINITE if any value is NaN or
    infinite, else TOO_LARGE if any ``|x| * scale + 1`` exceeds ``limit``, else FINITE."""
    status = FINITE
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            if not np.isfinite(v):
                return NOT_FINITE
            if abs(v) * scale + 1 > limit:
                status = TOO_LARGE
            grid[i, j] = np.rint(v * scale)
    return status


@compiled(
    "void(float32[:, ::1], int64[::1], int64, uint64[:, ::1], uint64[::1], uint64[:, ::1])",
    "void(float64[:, ::1], int64[::1], int64, uint64[:, ::1], uint64[::1], uint64[:, ::1])",
)
def band_keys(proj: Any, offsets: Any, cell: int, row_keys: Any, salts: Any, out: Any) -> None:
    """Band keys ``out`` ``(n, bands)`` of exact-integer projections ``proj``
    ``(n, bands * rows)``, band-major: cell ``floor((proj + offset) / cell)`` per row,
    summed times the band's row keys modulo 2^64, salted, then the splitmix64 finaliser."""
    bands, rows = row_keys.shape
    # floor of a float64 quotient is exact for integers below 2^53 (a true quotient
    # short of an integer by at least 1 / cell cannot round up to it), and several
    # times quicker than integer division
    width = np.float64(cell)
    for q in range(proj.shape[0]):
        for b in range(bands):
            h = np.uint64(0)
            for r in range(rows):
                j = b * rows + r
                z = np.float64(proj[q, j]) + np.float64(offsets[j])
                h += np.uint64(np.int64(np.floor(z / width))) * row_keys[b, r]
            h ^= salts[b]
            h ^= h >> _S30
            h *= _MIX1
            h ^= h >> _S27
            h *= _MIX2
            h ^= h >> _S31
            out[q, b] = h
