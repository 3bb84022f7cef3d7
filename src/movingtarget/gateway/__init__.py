"""The gateway box: any model behind any defense, served over HTTP.

``movingtarget serve`` runs :func:`create_app` on uvicorn: API keys with per-key
limits, persistent memory (SQLite, Redis), micro-batching, an audit log, Prometheus
metrics, and the Open Inference Protocol (KServe v2). See ``docs/gateway.md``.

Layout:

* :mod:`~movingtarget.gateway.server` — the HTTP server: the app and its routes
  (``app``, ``http``, ``kserve``), request bodies and inputs (``schemas``, ``inputs``),
  the service behind the routes (``service``, ``batching``, ``serving``) and its
  configuration (``config``).
* :mod:`~movingtarget.gateway.access` — who may ask, and how much: API keys
  (``base``: records, limits, the store protocol; ``keys``: :func:`open_keys`), their
  SQLite and Redis stores, per-key rate limits and quotas, request and query ids.
* :mod:`~movingtarget.gateway.observability` — what happened: the audit log and the
  Prometheus metrics.
* :mod:`~movingtarget.gateway.process` — a gateway in a subprocess (``movingtarget
  serve`` started, probed, stopped), for the tests and the benchmark.
* :mod:`~movingtarget.gateway.problems` — refused requests (HTTP status, kind,
  message), shared by the server and the access side.

The client side — an HTTP client of the gateway and the arena's adversaries against a
live gateway — lives in :mod:`movingtarget.attacks.remote`.
"""

from movingtarget.gateway.access.base import KeyLimits, KeyRecord, KeyStore
from movingtarget.gateway.access.keys import open_keys
from movingtarget.gateway.server.app import create_app
from movingtarget.gateway.server.config import GatewayConfig
from movingtarget.gateway.server.service import Gateway

__all__ = [
    "Gateway",
    "GatewayConfig",
    "KeyLimits",
    "KeyRecord",
    "KeyStore",
    "create_app",
    "open_keys",
]
