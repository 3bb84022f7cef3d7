"""How many threads one process's math libraries use."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def limit_threads(n: int) -> None:
    """Limit BLAS and OpenMP (and torch, if a model imported it) to ``n`` threads.

    For processes whose matrix products are small and which share the cores with
    other workers (experiment workers, gateway replicas and their clients): BLAS
    threads fighting over the cores make such products many times slower, and a
    thread descheduled mid-product stalls the call for milliseconds.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    torch = sys.modules.get("torch")  # imported only by a torch model: importing costs seconds
    if torch is not None:
        torch.set_num_threads(n)


_blas: list[Any] = []
_blas_seen_modules = -1


def _blas_controllers() -> list[Any]:
    # scanning the loaded libraries costs milliseconds: redo it only after imports,
    # which are what bring in another BLAS (scipy's, torch's)
    global _blas, _blas_seen_modules
    if len(sys.modules) != _blas_seen_modules:
        from threadpoolctl import ThreadpoolController

        _blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        _blas_seen_modules = len(sys.modules)
    return _blas


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with BLAS on one thread, then restore the previous counts.

    For hashing products that are memory-bound: split over several BLAS threads they
    gain little, and those threads keep spinning afterwards, so a torch model running
    in the same process (on its own OpenMP threads) loses cores to them and slows by
    up to half. Costs a few microseconds per use.
    """
    blas = _blas_controllers()
    saved = [c.get_num_threads() for c in blas]
    for c, n in zip(blas, saved, strict=True):
        if n != 1:
            c.set_num_threads(1)
    try:
        yield
    finally:
        for c, n in zip(blas, saved, strict=True):
            if n != 1:
                c.set_num_threads(n)
