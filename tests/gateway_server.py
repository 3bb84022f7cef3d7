"""Fixtures and helpers for the gateway tests: a real server per test module (see
:class:`movingtarget.gateway.process.GatewayProcess`), keys, requests."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from movingtarget.datasets import load_dataset
from movingtarget.gateway.access.base import KeyLimits
from movingtarget.gateway.access.keys import open_keys
from movingtarget.gateway.process import GatewayProcess as GatewayServer

__all__ = ["GatewayServer", "auth", "classify", "digits_x", "gateway_env", "new_key"]


@pytest.fixture(scope="session")
def gateway_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One model cache for every server of the session (trained once), one secret, and a
    default key store under the session's temporary folder (not the current folder)."""
    cache = tmp_path_factory.mktemp("model-cache")
    keys = tmp_path_factory.mktemp("default-keys") / "keys.db"
    return {
        "MOVINGTARGET_CACHE": str(cache),
        "MOVINGTARGET_SECRET": "gateway-tests",
        "MOVINGTARGET_KEYS": f"sqlite:///{keys}",
    }


@pytest.fixture(scope="session")
def digits_x() -> np.ndarray:
    return load_dataset("digits").x


def new_key(keys_url: str, name: str, **limits: float | int | None) -> str:
    store = open_keys(keys_url)
    try:
        return store.create(name, KeyLimits(**limits).check())[1]  # type: ignore[arg-type]
    finally:
        store.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def classify(url: str, token: str, x: np.ndarray, **kw: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/classify", json={"inputs": x.tolist()}, headers=auth(token), **kw)
