"""Noise-robust probabilistic fingerprints: band keys that survive small noise.

A query is mapped to ``bands`` 64-bit *band keys*. Two queries *match* when they
share at least ``threshold`` band keys (default 1). Band keys are plain uint64
keys, so they live in any :class:`~movingtarget.memory.stores.Store` (in-process,
SQLite, Redis) unchanged, and a stolen store holds only keyed hashes.

How a band key is made (locality-sensitive hashing for the L2 distance):

1. **Project.** ``bands * rows`` secret random unit directions ``a``; each gives
   one value ``a . x``. Small dense noise ``delta`` barely moves a projection: for
   noise of L-infinity size ``eps`` (uniform) or the same L2 length, ``a . delta``
   has standard deviation about ``eps / sqrt(3)`` whatever the input dimension,
   while two different inputs differ by ``||x - y|| / sqrt(d)`` on average.
2. **Quantize.** ``z = floor((a . x) / width + u)`` with a secret random offset
   ``u``; noise changes ``z`` with probability about ``E|a . delta| / width``.
3. **Hash bands.** The ``rows`` quantized values of each band go through a keyed
   multilinear hash (secret odd 64-bit keys, sums modulo 2^64; two different cell
   vectors collide with probability below 2^-43 over the keys while their cells differ
   by less than 2^20), salted per band and finished with splitmix64. A band survives
   noise when all its rows do; a different input collides on a band only when all
   ``rows`` projections fall in the same cells, which is rare. Many bands make at
   least one survive.

Why projections rather than hashed windows of quantized pixels: a window hash
breaks as soon as *one* pixel in the window crosses a quantization boundary, so
dense noise of a few /255 breaks most windows, and image backgrounds give distinct
inputs many shared windows; a projection averages the noise over every pixel.

Exactness: inputs are read on a fixed grid (``resolution``) and the directions are
random signs (+1 or -1), so every projection is an exact integer: in float32 when
every partial sum stays below 2^24 (8-bit-like images: twice the speed), else in
float64 (below 2^53), whatever order BLAS adds in; the quantization is an exact floor
division. The numpy path (with its per-value steps compiled, see ``_fingerprint_loops``) and the
torch path (CPU or GPU) give identical digests.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget._threads import one_blas_thread
from movingtarget.errors import ConfigError, InputError
from movingtarget.memory.fingerprints.exact import _M1, _M2, _loops, secret_from_env

_CHUNK_ROWS = 256  # rows per step: the working set stays in the CPU caches


def _signed(v: int) -> int:
    """A 64-bit pattern as a signed int64 value (torch has no uint64 arithmetic)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _mix_torch(h: Any) -> Any:
    # the same finaliser on int64 tensors: logical right shifts via masks, and
    # multiplication wraps modulo 2^64 exactly like uint64
    def shr(v: Any, s: int) -> Any:
        return (v >> s) & ((1 << (64 - s)) - 1)

    h = (h ^ shr(h, 30)) * _signed(_M1)
    h = (h ^ shr(h, 27)) * _signed(_M2)
    return h ^ shr(h, 31)


class RobustFingerprint:
    """Band keys that match under small noise: ``(n, bands)`` uint64 per batch.

    Parameters
    ----------
    bands:
        Number of band keys per query (8 bytes each when stored).
    rows:
        Quantized projections per band: more rows make distinct inputs collide less,
        and noise break a band more often.
    width:
        Quantization step of a projection, in input units (the inputs' L2 scale):
        wider cells survive larger noise and let more distinct inputs collide.
    threshold:
        Band keys two queries must share to match.
    resolution:
        Grid the inputs are read on before projecting (finer than 8-bit images).
    secret:
        Keys the directions, offsets and hashes (default ``$MOVINGTARGET_SECRET``).
    device:
        None: numpy on the CPU; a torch device (``"cuda"``, ``"cpu"``): the torch path.

    Examples
    --------
    >>> import numpy as np
    >>> fp = RobustFingerprint(secret=b"s")
    >>> x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    >>> noisy = x + np.float32(2 / 255)
    >>> keys = fp.fingerprint(np.concatenate([x, noisy]))
    >>> keys.shape, keys.dtype.name
    ((4, 16), 'uint64')
    >>> int((keys[0] == keys[2]).sum()) >= 1, int((keys[0] == keys[1]).sum())
    (True, 0)
    """

    name = "robust"

    def __init__(
        self,
        bands: int = 16,
        rows: int = 12,
        width: float = 0.1,
        *,
        threshold: int = 1,
        resolution: float = 2.0**-8,
        secret: bytes | str | None = None,
        device: str | None = None,
    ) -> None:
        checks = [
            (isinstance(bands, int) and bands >= 1, "bands", "an integer >= 1", bands),
            (isinstance(rows, int) and 1 <= rows <= 64, "rows", "an integer in [1, 64]", rows),
            (width > 0, "width", "> 0", width),
            (
                isinstance(threshold, int) and 1 <= threshold <= bands,
                "threshold",
                f"an integer in [1, bands={bands}]",
                threshold,
            ),
            (
                0 < resolution <= 1 and math.log2(resolution).is_integer(),
                "resolution",
                "a power of two in (0, 1] (so scaling is exact)",
                resolution,
            ),
        ]
        for ok, field, want, got in checks:
            if not ok:
                raise ConfigError(f"robust fingerprint: {field} must be {want}, got {got!r}")
        self.bands, self.rows, self.width = int(bands), int(rows), float(width)
        self.threshold = int(threshold)
        self.resolution = float(resolution)
        self.device = device
        self._seed = int.from_bytes(
            hashlib.blake2b(secret_from_env(secret), digest_size=8, person=b"mt-robust").digest(),
            "little",
        )
        self._params: dict[int, _Params] = {}
        _loops()  # load (or compile) them now, not on the first query
        self._torch: dict[tuple[int, str], tuple[Any, ...]] = {}

    @property
    def bytes_per_query(self) -> int:
        """Bytes of fingerprint a store keeps per query (the band keys)."""
        return 8 * self.bands

    def describe(self) -> str:
        """Parameters as text."""
        return f"robust(bands={self.bands}, rows={self.rows}, width={self.width:g})"

    def _for_dim(self, d: int) -> _Params:
        params = self._params.get(d)
        if params is None:
            params = _Params(d, self)
            self._params[d] = params
        return params

    def fingerprint(self, x: Any) -> NDArray[np.uint64]:
        """Band keys ``(n, bands)`` of a batch ``(n, ...)`` (numpy array or torch tensor)."""
        if self.device is not None or type(x).__module__.startswith("torch"):
            return self._fingerprint_torch(x)
        arr = np.asarray(x, dtype=np.float32)
        flat = arr.reshape(len(arr), math.prod(arr.shape[1:]))
        p = self._for_dim(flat.shape[1])
        if len(flat) <= 8:  # below BLAS's threading sizes: skip the thread switch
            return self._fingerprint_np(flat, p)
        with one_blas_thread():
            return self._fingerprint_np(flat, p)

    def _fingerprint_np(self, flat: NDArray[np.float32], p: _Params) -> NDArray[np.uint64]:
        loops = _loops()
        out = np.empty((len(flat), self.bands), dtype=np.uint64)
        flat = np.ascontiguousarray(flat)
        # one cache-sized buffer for the grid: never a fresh array per batch
        grid = np.empty((min(len(flat), _CHUNK_ROWS), flat.shape[1]), dtype=np.float32)
        scale = np.float32(p.inv_resolution)
        for start in range(0, len(flat), _CHUNK_ROWS):
            block = flat[start : start + _CHUNK_ROWS]
            status = loops.to_grid(block, scale, p.exact32, grid[: len(block)])
            if status == loops.NOT_FINITE:
                raise InputError("queries hold NaN or infinite values")
            if status == loops.FINITE:  # float32 products are exact integers here
                proj: NDArray[np.floating[Any]] = grid[: len(block)] @ p.directions32
            else:
                grid64 = np.clip(np.rint(block * p.inv_resolution), -p.clip, p.clip)
                proj = grid64 @ p.directions
            loops.band_keys(
                proj, p.offsets, p.cell, p.row_keys, p.band_salts, out[start : start + len(block)]
            )
        return out

    def _fingerprint_torch(self, x: Any) -> NDArray[np.uint64]:
        from movingtarget.models.torch import require_torch

        torch = require_torch()
        device = self.device or (str(x.device) if hasattr(x, "device") else "cpu")
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, np.float32))
        flat = t.to(device=device, dtype=torch.float32).reshape(len(t), int(np.prod(t.shape[1:])))
        p = self._for_dim(flat.shape[1])
        if len(flat) == 0:
            return np.empty((0, self.bands), dtype=np.uint64)
        key = (flat.shape[1], str(flat.device))
        consts = self._torch.get(key)
        if consts is None:
            consts = tuple(
                torch.from_numpy(a).to(flat.device)
                for a in (
                    p.directions,
                    p.directions32,
                    p.offsets,
                    p.row_keys.view(np.int64),
                    p.band_salts.view(np.int64),
                )
            )
            self._torch[key] = consts
        directions, directions32, offsets, row_keys, band_salts = consts
        if not bool(torch.isfinite(flat).all()):
            raise InputError("queries hold NaN or infinite values")
        grid32 = torch.round(flat * p.inv_resolution)  # exact: a power-of-two scaling
        if flat.device.type == "cpu" and float(grid32.abs().max()) <= p.exact32:
            # CPU float32 matmul is exact here; GPUs may use TF32, so they take float64
            proj = (grid32 @ directions32).to(torch.int64)
        else:
            grid = torch.clamp(torch.round(flat.double() * p.inv_resolution), -p.clip, p.clip)
            proj = (grid @ directions).to(torch.int64)
        z = torch.div(proj + offsets, p.cell, rounding_mode="floor")
        cells = z.reshape(len(z), self.bands, self.rows)
        h = (cells * row_keys).sum(dim=2)  # wraps modulo 2^64, as in numpy
        keys = _mix_torch(h ^ band_salts)
        return keys.cpu().numpy().view(np.uint64)

    def matched(self, seen: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Queries whose band keys were ``seen`` before ``(n, bands)`` on ``threshold`` bands."""
        return np.count_nonzero(seen, axis=1) >= self.threshold


class _Params:
    """The secret-derived constants for inputs of ``d`` values."""

    def __init__(self, d: int, fp: RobustFingerprint) -> None:
        rng = np.random.default_rng([fp._seed, d, fp.bands, fp.rows])
        k = fp.bands * fp.rows
        # random-sign directions (norm sqrt(d)): integer, so projections are exact
        self.directions = rng.choice(np.array([-1.0, 1.0]), size=(d, k))
        self.directions32 = self.directions.astype(np.float32)
        log_d = math.ceil(math.log2(max(d, 2)))
        # float32 is exact while d * max|grid| < 2^24; float64 while it is < 2^53
        self.exact32 = float(2 ** (24 - log_d) - 1)
        clip_bits = 53 - log_d - 1
        if clip_bits < 16:
            raise InputError(f"queries of {d} values are too large for robust fingerprints")
        self.clip = float(2**clip_bits - 1)
        self.inv_resolution = 1.0 / fp.resolution
        # one quantization cell in projection units: width (input L2 units) * sqrt(d) / resolution
        self.cell = max(round(fp.width * math.sqrt(d) * self.inv_resolution), 1)
        self.offsets = rng.integers(0, self.cell, size=k, dtype=np.int64)
        self.row_keys = rng.integers(0, 2**63, size=(fp.bands, fp.rows), dtype=np.uint64)
        self.row_keys |= np.uint64(1)  # odd keys: multiplication is a bijection
        # band salts make equal cells in different bands give different keys
        self.band_salts = rng.integers(0, 2**63, size=fp.bands, dtype=np.uint64)
