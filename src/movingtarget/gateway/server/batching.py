"""Micro-batching: concurrent requests become one model batch, answered in arrival order.

Requests join an asyncio queue in the order they arrive. One worker takes the first
waiting request, gathers more until the batch holds ``max_batch`` queries or
``max_wait_ms`` has passed since it started gathering, and hands the whole batch to
the handler on a single worker thread (so the event loop keeps accepting requests
while the model runs, and the defense never runs two batches at once). The handler
sees the queries in arrival order; each request gets its own slice of the answers.

The worker waits for more only while requests are known to be on their way (announced
with :meth:`MicroBatcher.arriving`, e.g. while their key is checked): a lone request
is answered at once instead of waiting out ``max_wait_ms`` for company that is not
coming.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError

R = TypeVar("R")
T = TypeVar("T")


@dataclass
class Job:
    """One request's queries (``x``, ``(n, ...)``) from one client, with what the
    handler needs to record about them (``meta``)."""

    x: NDArray[np.float32]
    client: int
    time: int
    future: asyncio.Future[Any] = field(repr=False)
    meta: Any = None


#: The handler: (queries, client ids, times, jobs) -> one result per job, in order.
Handler = Callable[[NDArray[np.float32], NDArray[np.int64], NDArray[np.int64], list[Job]], list[R]]


class Arrival:
    """A request on its way to the batcher (see :meth:`MicroBatcher.arriving`)."""

    def __init__(self, batcher: MicroBatcher[Any]) -> None:
        self._batcher: MicroBatcher[Any] | None = batcher
        batcher._arriving += 1

    def close(self) -> None:
        """The request was queued, or will not be: stop waiting for it."""
        if self._batcher is not None:
            self._batcher._arriving -= 1
            self._batcher = None

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MicroBatcher(Generic[R]):
    """Gathers :class:`Job` s into batches and runs ``handler`` on each, in order.

    Parameters
    ----------
    handler:
        Runs on the batcher's own thread; gets the concatenated queries, a client id
        and time per query, and the jobs; returns one result per job.
    max_batch:
        Most queries in one batch (a larger single request is run alone).
    max_wait_ms:
        Longest time spent gathering after the first request of a batch arrived.

    Examples
    --------
    >>> import asyncio, numpy as np
    >>> def handler(x, clients, times, jobs):
    ...     sums = x.sum(axis=1)
    ...     out, i = [], 0
    ...     for job in jobs:
    ...         out.append(sums[i : i + len(job.x)].tolist()); i += len(job.x)
    ...     return out
    >>> async def main():
    ...     b = MicroBatcher(handler, max_batch=8, max_wait_ms=1)
    ...     await b.start()
    ...     r = await asyncio.gather(*(b.submit(np.full((1, 2), i, np.float32), i, 0)
    ...                                for i in range(3)))
    ...     await b.stop()
    ...     return r
    >>> asyncio.run(main())
    [[0.0], [2.0], [4.0]]
    """

    def __init__(
        self, handler: Handler[R], *, max_batch: int = 256, max_wait_ms: float = 1.0
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"--max-batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms must be >= 0, got {max_wait_ms}")
        self.handler = handler
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self._queue: asyncio.Queue[Job] | None = None
        self._carry: Job | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="movingtarget-batch")
        self.batches = 0
        self._arriving = 0  # requests announced but not queued yet (event loop only)

    def arriving(self) -> Arrival:
        """Announce a request that will be submitted soon; use as a context manager
        around its checks. While any is announced, a gathering batch waits for it."""
        return Arrival(self)

    async def start(self) -> None:
        """Start the worker (inside the running event loop)."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker; waiting requests fail with a 503-worthy error."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._pool.shutdown(wait=True)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the batch thread, between batches (state the handler uses, such
        as a defense learning labels, is never touched by two threads at once)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def submit(
        self,
        x: NDArray[np.float32],
        client: int,
        time: int,
        meta: Any = None,
        arrival: Arrival | None = None,
    ) -> R:
        """Queue ``x`` (answered together with whatever else arrives) and wait."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        job = Job(x, client, time, asyncio.get_running_loop().create_future(), meta)
        self._queue.put_nowait(job)
        if arrival is not None:
            arrival.close()
        result: R = await job.future
        return result

    async def _gather(self) -> list[Job]:
        assert self._queue is not None
        queue = self._queue
        first = self._carry if self._carry is not None else await queue.get()
        self._carry = None
        jobs, rows = [first], len(first.x)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while rows < self.max_batch:
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0 or self._arriving <= 0:
                    break
                try:
                    job = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
            if rows + len(job.x) > self.max_batch:
                self._carry = job  # first of the next batch: arrival order is kept
                break
            jobs.append(job)
            rows += len(job.x)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            x = jobs[0].x if len(jobs) == 1 else np.concatenate([j.x for j in jobs])
            sizes = [len(j.x) for j in jobs]
            clients = np.repeat(np.array([j.client for j in jobs], np.int64), sizes)
            times = np.repeat(np.array([j.time for j in jobs], np.int64), sizes)
            try:
                results = await loop.run_in_executor(
                    self._pool, self.handler, x, clients, times, jobs
                )
            except Exception as exc:  # the batch failed: every request in it hears why
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.batches += 1
            for job, result in zip(jobs, results, strict=True):
                if not job.future.done():  # a client that hung up is not answered
                    job.future.set_result(result)
