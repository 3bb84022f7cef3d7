"""The gateway box: any model behind any defense, served over HTTP.

``movingtarget serve`` runs :func:`create_app` on uvicorn: API keys with per-key
limits, persistent memory (SQLite, Redis), micro-batching, an audit log, Prometheus
metrics, and the Open Inference Protocol (KServe v2). See ``docs/gateway.md``.
"""

from movingtarget.gateway.app import create_app
from movingtarget.gateway.config import GatewayConfig
from movingtarget.gateway.keys import KeyLimits, KeyRecord, KeyStore, open_keys
from movingtarget.gateway.service import Gateway

__all__ = [
    "Gateway",
    "GatewayConfig",
    "KeyLimits",
    "KeyRecord",
    "KeyStore",
    "create_app",
    "open_keys",
]
