"""Run one action from several threads released at the same moment (a barrier), as
replicas started together do: the races a test wants to provoke need the openers to
collide, which separately started processes rarely do."""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(n: int, action: Callable[[int], None]) -> list[BaseException]:
    """Run ``action(i)`` for ``i`` in ``range(n)`` on ``n`` threads released together;
    return what they raised (empty when all succeeded)."""
    barrier = threading.Barrier(n)
    raised: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            action(i)
        except BaseException as err:  # reported to the test, which names it
            raised.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return raised
