"""Feature-space nearest-neighbour memory: a query is a near repeat when an earlier
query lies within ``radius`` of it in an embedding space.

Embeddings come from an :class:`Encoder`: the model's penultimate layer (torch
models), a seeded random projection, or a PCA fitted on benign data. They are kept
in a FAISS index: exact (``flat``) or approximate (``hnsw``, a navigable small-world
graph: a lookup costs about ``log(n)`` distance computations instead of ``n``; ``ivf``,
an inverted file: a lookup scans the ``nprobe`` nearest of ``nlist`` k-means cells).

Unlike the hashed fingerprints, this memory keeps embeddings (not raw inputs, but
more revealing than keyed hashes), in this process only.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from movingtarget._optional import require
from movingtarget.errors import ConfigError

INDEXES = ("flat", "hnsw", "ivf")
_CHUNK = 1024


def _require_faiss() -> Any:
    return require("faiss", "neighbour memory (FAISS)")


def _flat(x: Any) -> NDArray[np.float32]:
    arr = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(arr.reshape(len(arr), int(np.prod(arr.shape[1:]))))


@runtime_checkable
class Encoder(Protocol):
    """Maps a batch of queries to embeddings ``(n, dim)`` float32.

    Examples
    --------
    >>> isinstance(RandomProjectionEncoder(8), Encoder)
    True
    """

    dim: int

    def encode(self, x: NDArray[np.generic]) -> NDArray[np.float32]:
        """Embeddings of ``x``."""
        ...


class RandomProjectionEncoder:
    """A fixed, seeded Gaussian projection to ``dim`` values (distances kept up to a
    few per cent, Johnson-Lindenstrauss); inputs of ``dim`` values or fewer pass
    unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> enc = RandomProjectionEncoder(dim=8, seed=0)
    >>> enc.encode(np.ones((3, 100), np.float32)).shape
    (3, 8)
    """

    def __init__(self, dim: int = 64, *, seed: int = 0) -> None:
        if dim < 1:
            raise ConfigError(f"random projection: dim must be >= 1, got {dim}")
        self.dim, self.seed = int(dim), int(seed)
        self._matrix: dict[int, NDArray[np.float32] | None] = {}

    def encode(self, x: NDArray[np.generic]) -> NDArray[np.float32]:
        flat = _flat(x)
        d = flat.shape[1]
        if d not in self._matrix:
            if d <= self.dim:
                self._matrix[d] = None
            else:
                rng = np.random.default_rng([self.seed, d, self.dim])
                m = rng.standard_normal((d, self.dim)) / np.sqrt(self.dim)
                self._matrix[d] = m.astype(np.float32)
        matrix = self._matrix[d]
        return flat if matrix is None else np.ascontiguousarray(flat @ matrix)


class PCAEncoder:
    """Principal components of benign data (``fit``), not whitened: distances keep the
    input's units, so small noise stays small.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((50, 10), dtype=np.float32)
    >>> PCAEncoder(dim=3).fit(x).encode(x).shape
    (50, 3)
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 1:
            raise ConfigError(f"pca encoder: dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self._mean: NDArray[np.float32] | None = None
        self._components: NDArray[np.float32] | None = None

    def fit(self, x: NDArray[np.generic]) -> PCAEncoder:
        """Fit the components on benign queries; returns ``self``."""
        flat = _flat(x).astype(np.float64)
        mean = flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
        k = min(self.dim, vt.shape[0])
        self.dim = k
        self._mean = mean.astype(np.float32)
        self._components = np.ascontiguousarray(vt[:k].T.astype(np.float32))
        return self

    def encode(self, x: NDArray[np.generic]) -> NDArray[np.float32]:
        if self._mean is None or self._components is None:
            raise ConfigError("pca encoder: call fit() on benign data before encoding")
        return np.ascontiguousarray((_flat(x) - self._mean) @ self._components)


class PenultimateEncoder:
    """The input to a torch model's last layer (its penultimate features), computed on
    the model's own device.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from movingtarget.models.torch import TorchModel
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    >>> enc = PenultimateEncoder(TorchModel(net, 3, device="cpu"))
    >>> enc.encode(np.zeros((2, 4), np.float32)).shape, enc.dim
    ((2, 6), 6)
    """

    def __init__(self, model: Any) -> None:
        import torch

        module = getattr(model, "module", None)
        if not isinstance(module, torch.nn.Module):
            raise ConfigError("penultimate encoder: the model is not a torch model")
        children = list(module.children())
        if not children:
            raise ConfigError("penultimate encoder: the torch module has no layers")
        self._last = children[-1]
        self._module = module
        self._device = getattr(model, "device", "cpu")
        self._batch = int(getattr(model, "batch_size", 1024))
        features = getattr(self._last, "in_features", None)
        if features is None:
            raise ConfigError("penultimate encoder: the last layer must be torch.nn.Linear")
        self.dim = int(features)

    def encode(self, x: NDArray[np.generic]) -> NDArray[np.float32]:
        import torch

        arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        out = np.empty((len(arr), self.dim), dtype=np.float32)
        captured: list[Any] = []
        # a hook on the last layer reads its input: works for any module, not only Sequential
        hook = self._last.register_forward_hook(lambda m, inp, o: captured.append(inp[0]))
        try:
            with torch.no_grad():
                for start in range(0, len(arr), self._batch):
                    chunk = torch.from_numpy(arr[start : start + self._batch]).to(self._device)
                    captured.clear()
                    self._module(chunk)
                    feats = captured[0].reshape(len(chunk), -1).float().cpu().numpy()
                    out[start : start + len(chunk)] = feats
        finally:
            hook.remove()
        return out


class NeighbourIndex:
    """A FAISS index of embeddings answering "distance to the nearest stored one".

    Parameters
    ----------
    dim:
        Embedding size.
    kind:
        ``"flat"`` (exact, every lookup scans everything), ``"hnsw"`` or ``"ivf"``
        (approximate).
    hnsw_m, ef_construction, ef_search:
        HNSW graph degree and search breadths (larger: higher recall, slower).
    nlist, nprobe:
        IVF cells and cells scanned per lookup. The cells are trained (k-means) on the
        first ``40 * nlist`` stored embeddings; until then an exact index answers.

    Examples
    --------
    >>> import numpy as np
    >>> idx = NeighbourIndex(2, kind="flat")
    >>> idx.add(np.array([[0, 0], [3, 4]], np.float32))
    >>> idx.nearest(np.array([[3, 3]], np.float32)).round(3).tolist()
    [1.0]
    """

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        nlist: int = 1024,
        nprobe: int = 8,
    ) -> None:
        if kind not in INDEXES:
            raise ConfigError(f"neighbour index: kind must be one of {INDEXES}, got {kind!r}")
        faiss = _require_faiss()
        self.dim, self.kind = int(dim), kind
        self._nlist, self._nprobe = int(nlist), int(nprobe)
        if kind == "ivf" and not 1 <= self._nprobe <= self._nlist:
            raise ConfigError(f"neighbour index: nprobe must be in [1, nlist], got {nprobe}")
        # ivf: embeddings kept until the cells are trained (None once trained)
        self._untrained: list[NDArray[np.float32]] | None = []
        if kind in ("flat", "ivf"):
            # ivf starts exact and becomes an inverted file once it has training data
            self._index = faiss.IndexFlatL2(self.dim)
        else:
            self._index = faiss.IndexHNSWFlat(self.dim, int(hnsw_m))
            self._index.hnsw.efConstruction = int(ef_construction)
            self._index.hnsw.efSearch = int(ef_search)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, emb: NDArray[np.float32]) -> None:
        """Store embeddings ``(n, dim)``."""
        if not len(emb):
            return
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        self._index.add(emb)
        if self.kind == "ivf" and self._untrained is not None:
            self._untrained.append(emb)
            if self._index.ntotal >= 40 * self._nlist:
                self._train_ivf()

    def _train_ivf(self) -> None:
        assert self._untrained is not None
        faiss = _require_faiss()
        stored = np.concatenate(self._untrained)
        self._quantizer = faiss.IndexFlatL2(self.dim)  # the IVF index borrows it: keep it
        ivf = faiss.IndexIVFFlat(self._quantizer, self.dim, self._nlist)
        sample = stored[:: max(1, len(stored) // (64 * self._nlist))]  # k-means on a sample
        ivf.train(sample)
        ivf.add(stored)
        ivf.nprobe = self._nprobe
        self._index, self._untrained = ivf, None

    def search(self, emb: NDArray[np.float32], k: int = 1) -> tuple[NDArray[Any], NDArray[Any]]:
        """Squared distances and ids of the ``k`` nearest stored embeddings (ids -1: none)."""
        return self._index.search(np.ascontiguousarray(emb, dtype=np.float32), k)

    def nearest(self, emb: NDArray[np.float32]) -> NDArray[np.float64]:
        """L2 distance of each embedding to its nearest stored one (inf when empty)."""
        if len(self) == 0:
            return np.full(len(emb), np.inf)
        d2, ids = self.search(emb, 1)
        out = np.sqrt(np.maximum(d2[:, 0].astype(np.float64), 0.0))
        out[ids[:, 0] < 0] = np.inf
        return out

    def reset(self) -> None:
        """Forget every stored embedding."""
        if self.kind == "ivf":
            self._index = _require_faiss().IndexFlatL2(self.dim)
            self._untrained = []
        else:
            self._index.reset()


def stream_nearest(index: NeighbourIndex, emb: NDArray[np.float32]) -> NDArray[np.float64]:
    """Distance of each embedding to the nearest *earlier* one (stored before, or earlier
    in ``emb``), adding ``emb`` to ``index`` as it goes. Batch-first: chunks of rows are
    searched against the index, then against each other."""
    out = np.empty(len(emb), dtype=np.float64)
    for start in range(0, len(emb), _CHUNK):
        chunk = emb[start : start + _CHUNK].astype(np.float32, copy=False)
        best = index.nearest(chunk)
        if len(chunk) > 1:
            sq = (chunk * chunk).sum(axis=1, dtype=np.float64)
            d2 = sq[:, None] + sq[None, :] - 2.0 * (chunk.astype(np.float64) @ chunk.T)
            # only earlier rows count: mask the diagonal and everything after it
            d2[np.triu_indices(len(chunk))] = np.inf
            within = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
            best = np.minimum(best, within)
        out[start : start + len(chunk)] = best
        index.add(chunk)
    return out


class NeighbourMemory:
    """Remembers embeddings of past queries; a query within ``radius`` of any earlier
    one (an earlier batch, or earlier in its own batch) is a near repeat.

    Parameters
    ----------
    encoder:
        How queries become embeddings (default: a seeded random projection to 64).
    radius:
        L2 distance in embedding space that counts as a repeat (see
        :func:`movingtarget.memory.fingerprints.calibration.calibrate_radius`).
    index:
        ``"flat"`` or ``"hnsw"``.

    Examples
    --------
    >>> import numpy as np
    >>> mem = NeighbourMemory(radius=0.1)
    >>> x = np.zeros((3, 4), np.float32); x[2] = 1.0
    >>> x[1] += 0.01                       # a noisy copy of the first query
    >>> mem.observe(x, np.arange(3)).tolist()
    [False, True, False]
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        *,
        radius: float = 0.0,
        index: str = "flat",
        **index_params: int,
    ) -> None:
        if not radius >= 0:
            raise ConfigError(f"neighbour memory: radius must be >= 0, got {radius}")
        if index not in INDEXES:
            raise ConfigError(f"neighbour memory: index must be one of {INDEXES}, got {index!r}")
        self.encoder: Encoder = encoder if encoder is not None else RandomProjectionEncoder()
        self.radius = float(radius)
        self.index_kind = index
        self._index_params = index_params
        self._index: NeighbourIndex | None = None

    def _ensure(self, dim: int) -> NeighbourIndex:
        if self._index is None:
            self._index = NeighbourIndex(dim, self.index_kind, **self._index_params)
        return self._index

    def nearest(self, x: NDArray[np.generic], now: NDArray[np.int64]) -> NDArray[np.float64]:
        """Distance of each query to the nearest earlier one; records the queries."""
        emb = self.encoder.encode(x)
        return stream_nearest(self._ensure(emb.shape[1]), emb)

    def observe(self, x: NDArray[np.generic], now: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Record ``x``; True where a query is a near repeat. ``now`` keeps the store
        signature; this memory has no expiry, so times are not kept."""
        return self.nearest(x, now) <= self.radius

    def clear(self) -> None:
        """Forget everything."""
        if self._index is not None:
            self._index.reset()

    def __len__(self) -> int:
        return 0 if self._index is None else len(self._index)
