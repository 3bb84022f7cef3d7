"""Fingerprints: what the memory box keys a query by, computed batch-first.

A fingerprint never stores the raw input. :class:`ExactFingerprint` is a keyed
multilinear hash (a strongly universal family) of the query's canonical bytes:
without the secret an attacker cannot precompute collisions, and the 64-bit
digest reveals nothing useful about the input.
"""

from __future__ import annotations

import hashlib
import os
import threading
from types import ModuleType
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from movingtarget._numba import loops
from movingtarget._threads import one_blas_thread

_CHUNK_ROWS = 4096
_BLOCK_VALUES = 1 << 19  # float64 values in one block: 4 MB, reused
# splitmix64's multipliers
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
# odd constants that fold the four lanes into one word before the final mix
_COMBINE = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93],
    dtype=np.uint64,
)


def _loops() -> ModuleType:
    return loops("movingtarget.memory.fingerprints._loops")


#: The secret used when none is set: public (it is in this file), so fine for
#: experiments and never good enough for a deployed gateway.
DEVELOPMENT_SECRET = "movingtarget-development-secret"


def secret_from_env(secret: bytes | str | None = None) -> bytes:
    """The memory secret: the argument, else ``$MOVINGTARGET_SECRET``, else a fixed
    development value (fine for experiments; set a real one for a deployed gateway)."""
    if secret is None:
        secret = os.environ.get("MOVINGTARGET_SECRET", DEVELOPMENT_SECRET)
    return secret.encode() if isinstance(secret, str) else secret


def canonical(x: NDArray[np.generic]) -> NDArray[np.float32]:
    """Queries as contiguous float32 rows ``(n, d)``, with -0.0 folded into +0.0
    (they compare equal, so they must fingerprint equal)."""
    flat = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    return flat + np.float32(0.0)


def _mix64_inplace(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64 finaliser (every input bit reaches every output bit) on a contiguous
    1-d array, in place (the compiled one the fingerprint loops use)."""
    _loops().mix64_inplace(h)
    return h


def _mix64(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    # the finaliser on a copy: the caller's keys stay as they are
    return _mix64_inplace(np.array(h, dtype=np.uint64))


_MASK = (1 << 64) - 1


def _mix64_int(h: int) -> int:
    h = ((h ^ (h >> 30)) * _M1) & _MASK
    h = ((h ^ (h >> 27)) * _M2) & _MASK
    return h ^ (h >> 31)


# up to this many 16-bit chunks in a batch, the compiled loop beats the BLAS product
_LOOP_CHUNKS = 1 << 15


class Fingerprint(Protocol):
    """Maps a batch of queries to fingerprints, one row per query.

    Examples
    --------
    >>> import numpy as np
    >>> ExactFingerprint(secret=b"k").fingerprint(np.zeros((3, 4), np.float32)).shape
    (3,)
    """

    name: str

    def fingerprint(self, x: NDArray[np.generic]) -> NDArray[np.uint64]:
        """Fingerprints of ``x``: shape ``(n,)`` for exact, ``(n, h)`` for set-valued."""
        ...


class ExactFingerprint:
    """Keyed 64-bit digest of a query's canonical float32 bytes.

    The bytes are read as 16-bit chunks ``c_j`` and hashed with four independent
    keyed lanes ``sum_j a_j c_j`` (multilinear hashing, keys ``a_j`` < 2^20 drawn
    from the secret). Every partial sum stays below 2^53, so a float64 matrix
    product computes it *exactly*, whatever order BLAS adds in (large batches), as
    does a compiled integer loop (small batches, where the product's fixed costs
    dominate); two different queries collide on all four lanes with probability at
    most 2^-80 over the key.

    Examples
    --------
    >>> import numpy as np
    >>> fp = ExactFingerprint(secret=b"s")
    >>> x = np.array([[0.0, 1.0], [-0.0, 1.0], [0.0, 1.0000001]], dtype=np.float32)
    >>> h = fp.fingerprint(x)
    >>> bool(h[0] == h[1]), bool(h[0] == h[2])
    (True, False)
    """

    name = "exact"

    def __init__(self, secret: bytes | str | None = None) -> None:
        self._seed = int.from_bytes(
            hashlib.blake2b(secret_from_env(secret), digest_size=8, person=b"mt-exact").digest(),
            "little",
        )
        self._keys: dict[int, NDArray[np.float64]] = {}
        self._int_keys: dict[int, NDArray[np.int64]] = {}
        self._local = threading.local()
        _loops()  # load (or compile) them now, not on the first query

    def __getstate__(self) -> dict[str, object]:
        # the per-thread buffers are scratch space: a copy makes its own
        state = dict(self.__dict__)
        del state["_local"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _lane_keys(self, n_chunks: int) -> NDArray[np.float64]:
        keys = self._keys.get(n_chunks)
        if keys is None:
            # keep every lane sum exact in float64: n_chunks * 2^16 * 2^bits < 2^53
            bits = min(20, 53 - 16 - int(np.ceil(np.log2(max(n_chunks, 2)))))
            if bits < 8:
                raise ValueError(f"queries of {n_chunks // 2} values are too large to fingerprint")
            rng = np.random.default_rng([self._seed, n_chunks])
            keys = rng.integers(1, 2**bits, size=(n_chunks, 4)).astype(np.float64)
            self._keys[n_chunks] = keys
        return keys

    def _buffers(self, rows: int, n_chunks: int) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
        # reused per thread: fresh multi-MB temporaries would be page-faulted in on every
        # batch, which costs more than the hashing itself
        bufs = getattr(self._local, "bufs", None)
        if bufs is None or bufs[1].shape != (rows, n_chunks):
            bufs = (np.empty((rows, n_chunks // 2), np.float32), np.empty((rows, n_chunks)))
            self._local.bufs = bufs
        return bufs

    def fingerprint(self, x: NDArray[np.generic]) -> NDArray[np.uint64]:
        """One uint64 digest per query."""
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        n_chunks = 2 * flat.shape[1]
        keys = self._lane_keys(n_chunks)
        if len(flat) * n_chunks <= _LOOP_CHUNKS:
            # adding +0.0 folds -0.0 into +0.0, as canonical() does
            chunks = np.ascontiguousarray(flat + np.float32(0.0)).view(np.uint16)
            int_keys = self._int_keys.get(n_chunks)
            if int_keys is None:
                int_keys = self._int_keys.setdefault(n_chunks, keys.astype(np.int64))
            out = np.empty(len(flat), dtype=np.uint64)
            _loops().exact_digests(chunks, int_keys, _COMBINE, out)
            return out
        rows = min(_CHUNK_ROWS, max(1, _BLOCK_VALUES // n_chunks))
        out = np.empty(len(flat), dtype=np.uint64)
        with one_blas_thread():
            self._fold_blocks(flat, keys, rows, out)
        return out

    def _fold_blocks(
        self,
        flat: NDArray[np.float32],
        keys: NDArray[np.float64],
        rows: int,
        out: NDArray[np.uint64],
    ) -> None:
        n_chunks = keys.shape[0]
        buf32, buf64 = self._buffers(rows, n_chunks)
        for start in range(0, len(flat), rows):
            block = flat[start : start + rows]
            b = len(block)
            np.add(block, np.float32(0.0), out=buf32[:b])  # folds -0.0 into +0.0
            np.copyto(buf64[:b], buf32[:b].view(np.uint16))
            lanes = (buf64[:b] @ keys).astype(np.uint64)
            # fold the four lanes (numpy's uint64 product wraps modulo 2^64, and with
            # four columns its plain loop is quicker than a column at a time)
            out[start : start + b] = _mix64_inplace(lanes @ _COMBINE)
