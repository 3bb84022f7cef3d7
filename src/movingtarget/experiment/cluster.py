"""Deployments on a Dask distributed cluster (``movingtarget run --cluster``).

The runner trains each split's model once, here, and hands the workers one scattered
copy of everything a deployment reads (:class:`Shared`: the prepared splits and the
config): ``client.scatter(..., broadcast=True)``, as Dask's documentation advises for
large inputs that many tasks use, so a model crosses the network once per worker, not
once per task. Every deployment is one ``client.submit`` of :func:`run_remote`; the
runner follows the futures with ``distributed.as_completed``. Dask itself reschedules a
task whose worker died; a task that raises is reported by name by the runner.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from movingtarget._optional import require
from movingtarget.errors import ConfigError

if TYPE_CHECKING:
    from movingtarget.experiment.config import ExperimentConfig
    from movingtarget.experiment.runner import Prepared, Task

#: Seconds a ``tcp://`` scheduler has to answer before ``--cluster`` gives up.
CONNECT_TIMEOUT = 5

_LOCAL = re.compile(r"local:(\d+)")
_ADDRESS = re.compile(r"(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+")

#: ``--cluster`` takes one of these; the one line every bad value gets.
USAGE = "write tcp://HOST:PORT (a running `dask scheduler`) or local:N (N local workers)"


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed ``--cluster``: ``workers`` local worker processes, or a scheduler address."""

    text: str
    workers: int = 0
    address: str = ""


def parse_cluster(text: str) -> ClusterSpec:
    """Parse ``--cluster``: ``local:N`` or a scheduler address; a :class:`ConfigError`
    (one line) for anything else.

    >>> parse_cluster("local:2").workers, parse_cluster("tcp://10.0.0.1:8786").address
    (2, 'tcp://10.0.0.1:8786')
    >>> parse_cluster("local:0")
    Traceback (most recent call last):
    movingtarget.errors.ConfigError: --cluster 'local:0': a local cluster needs at least one worker
    >>> parse_cluster("10.0.0.1:8786")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    movingtarget.errors.ConfigError: --cluster '10.0.0.1:8786': write tcp://HOST:PORT ...
    """
    local = _LOCAL.fullmatch(text)
    if local:
        n = int(local.group(1))
        if n < 1:
            raise ConfigError(f"--cluster {text!r}: a local cluster needs at least one worker")
        return ClusterSpec(text, workers=n)
    if _ADDRESS.fullmatch(text):
        return ClusterSpec(text, address=text)
    raise ConfigError(f"--cluster {text!r}: {USAGE}")


@contextlib.contextmanager
def open_client(spec: ClusterSpec) -> Iterator[Any]:
    """A ``distributed.Client`` for ``spec``: a fresh ``LocalCluster`` (closed afterwards)
    or a connection to a running scheduler. Missing ``distributed`` names the extra."""
    distributed = require("distributed", "--cluster")
    if spec.workers:
        # one thread per worker: deployments are single-threaded numpy, and a worker's
        # tasks share one model (see run_remote). The scheduler serves its HTTP routes
        # (health, metrics) even without a dashboard: on a random port (":0"), so that a
        # cluster already on 8787 costs no warning
        with (
            distributed.LocalCluster(
                n_workers=spec.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = distributed.Client(spec.address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--cluster {spec.text}: no Dask scheduler answered within {CONNECT_TIMEOUT} s "
            f"({first})"
        ) from None
    with client:
        try:
            # tasks would wait forever for a worker: say so instead
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except TimeoutError:
            raise ConfigError(
                f"--cluster {spec.text}: the scheduler has no workers (none joined within "
                f"{CONNECT_TIMEOUT} s); start some with `dask worker {spec.address}`"
            ) from None
        yield client


@dataclass(frozen=True)
class Shared:
    """What every deployment on a worker reads, scattered once to each worker."""

    prepared: dict[int, Prepared]
    config: ExperimentConfig


# Tasks on one worker share its copy of the model (run_task resets what a deployment
# changed in it): a worker started with several threads runs them one at a time.
_LOCK = threading.Lock()


def run_remote(task: Task, shared: Shared) -> tuple[dict[str, Any], str]:
    """Run one deployment on a Dask worker; return its result and its event log as CSV
    (the worker's disk need not be the client's: the client writes the results folder)."""
    from movingtarget.experiment import runner

    with _LOCK:
        if runner._STATE.get("prepared") is not shared.prepared:
            # first task of this sweep on this worker (the scattered object is deserialized
            # once per worker, so identity marks the sweep)
            runner._init_worker(shared.prepared, shared.config, "")
        result, log = runner.deploy(task)
        return result, log.to_csv()
