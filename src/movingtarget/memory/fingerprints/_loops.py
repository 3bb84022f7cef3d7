"""The fingerprints' per-value steps, compiled with numba: the exact digest of a few
queries, and the robust fingerprint's reading onto the grid and band hashing.

Each is short integer arithmetic on every value that numpy would run as a dozen
whole-array passes (each with its own temporary); one loop does it in one pass. The
robust projection itself, and the exact digests of large batches, stay BLAS matrix
products.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from movingtarget._numba import compiled
from movingtarget.memory.fingerprints.exact import _M1, _M2

_MIX1, _MIX2 = np.uint64(_M1), np.uint64(_M2)
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)

FINITE, NOT_FINITE, TOO_LARGE = 0, 1, 2


@compiled("uint64(uint64)")
def mix64(h: Any) -> Any:
    """The splitmix64 finaliser: every input bit reaches every output bit."""
    h ^= h >> _S30
    h *= _MIX1
    h ^= h >> _S27
    h *= _MIX2
    h ^= h >> _S31
    return h


@compiled("void(uint64[::1])")
def mix64_inplace(h: Any) -> None:
    """The finaliser on every value of ``h``, in place."""
    for i in range(h.shape[0]):
        h[i] = mix64(h[i])


@compiled("void(uint16[:, ::1], int64[:, ::1], uint64[::1], uint64[::1])")
def exact_digests(chunks: Any, keys: Any, combine: Any, out: Any) -> None:
    """Digests ``out`` of queries given as 16-bit chunks ``(n, n_chunks)``: four lanes
    ``sum_j keys[j, lane] * chunk_j`` (exact: the keys keep every sum below 2^53),
    folded by ``combine`` modulo 2^64, then the finaliser (as the batch path computes
    with float64 products)."""
    for i in range(chunks.shape[0]):
        a0 = a1 = a2 = a3 = np.int64(0)
        for j in range(chunks.shape[1]):
            c = np.int64(chunks[i, j])
            a0 += c * keys[j, 0]
            a1 += c * keys[j, 1]
            a2 += c * keys[j, 2]
            a3 += c * keys[j, 3]
        h = np.uint64(a0) * combine[0] + np.uint64(a1) * combine[1]
        h += np.uint64(a2) * combine[2] + np.uint64(a3) * combine[3]
        out[i] = mix64(h)


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
            out[q, b] = mix64(h ^ salts[b])
