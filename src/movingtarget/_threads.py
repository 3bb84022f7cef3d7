"""How many threads one process's math libraries use."""

from __future__ import annotations

import sys


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
