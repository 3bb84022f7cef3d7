"""A Python client of the gateway (httpx): classify, feedback, health, metadata.

A ``429`` is waited out as its ``Retry-After`` says (up to ``max_wait_s`` in all per
call); any other refusal is a :class:`RemoteError` with the gateway's own message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN, Reason
from movingtarget.errors import MovingTargetError

#: Reason codes by the labels the gateway sends (unknown labels read as UNDECIDED).
_REASONS = {r.label: int(r) for r in Reason}


class RemoteError(MovingTargetError):
    """The gateway refused a request (the message is the gateway's own), or could not be
    reached at all (``status`` 0: the message says why, with no status it never sent)."""

    def __init__(self, status: int, message: str, kind: str = "") -> None:
        super().__init__(message if status == 0 else f"gateway answered {status}: {message}")
        self.status = status
        #: The problem's ``type`` as the gateway named it (e.g. ``out-of-domain``).
        self.kind = kind


@dataclass(frozen=True)
class RemoteAnswers:
    """Answers to one request: labels (ABSTAIN = -1), reason codes, query ids."""

    request_id: str
    labels: NDArray[np.int64]
    reasons: NDArray[np.uint8]
    query_ids: list[str]


class GatewayClient:
    """One API key's connection to a gateway.

    Parameters
    ----------
    url:
        The gateway's base URL, e.g. ``http://127.0.0.1:8000``.
    key:
        The API key token.
    max_wait_s:
        Longest total time one call may spend waiting out ``429`` answers.
    sleep:
        How to wait (tests and simulations may pass their own).

    Examples
    --------
    >>> client = GatewayClient("http://127.0.0.1:8000", "mt_...")  # doctest: +SKIP
    >>> client.classify(np.zeros((1, 64), np.float32)).labels      # doctest: +SKIP
    array([0])
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 30.0,
        max_wait_s: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.max_wait_s = float(max_wait_s)
        self._sleep = sleep
        self.waited_s = 0.0  # total time spent honouring Retry-After
        self.refused = 0  # 429 answers received
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {key}"}
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, waiting out 429s; a :class:`RemoteError` for any other refusal."""
        waited = 0.0
        while True:
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise RemoteError(
                    0, f"cannot reach {self.url}: {exc or type(exc).__name__}"
                ) from None
            if resp.status_code != 429:
                break
            self.refused += 1
            delay = _retry_after(resp)
            if waited + delay > self.max_wait_s:
                raise RemoteError(429, f"{_message(resp)} (waited {waited:.0f} s already)")
            self._sleep(delay)
            waited += delay
            self.waited_s += delay
        if resp.status_code >= 400:
            raise RemoteError(resp.status_code, _message(resp), _kind(resp))
        return resp

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: model, version, defense."""
        data: dict[str, Any] = self.request("GET", "/healthz").json()
        return data

    def metadata(self) -> dict[str, Any]:
        """The served model's KServe v2 metadata (input shape, outputs)."""
        name = self.health()["model"]
        data: dict[str, Any] = self.request("GET", f"/v2/models/{name}").json()
        return data

    def classify(
        self, x: NDArray[np.floating[Any]], request_id: str | None = None
    ) -> RemoteAnswers:
        """Answers to the batch ``x`` (one request)."""
        headers = {"X-Request-ID": request_id} if request_id else None
        body = {"inputs": np.asarray(x, dtype=np.float32).tolist()}
        data = self.request("POST", "/v1/classify", json=body, headers=headers).json()
        answers = data["answers"]
        labels = np.array(
            [ABSTAIN if a["label"] is None else a["label"] for a in answers], np.int64
        )
        reasons = np.array([_REASONS.get(a["reason"], 0) for a in answers], np.uint8)
        return RemoteAnswers(data["request_id"], labels, reasons, [a["query_id"] for a in answers])

    def feedback(self, labels: dict[str, int]) -> int:
        """Send true labels of earlier queries (query id -> class); returns how many stored."""
        items = [{"query_id": q, "label": int(y)} for q, y in labels.items()]
        stored: int = self.request("POST", "/v1/feedback", json={"labels": items}).json()["stored"]
        return stored


def _retry_after(resp: httpx.Response) -> float:
    try:
        return max(float(resp.headers.get("retry-after", "1")), 0.0)
    except ValueError:
        return 1.0


def _kind(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("type", ""))
    except (ValueError, AttributeError):
        return ""


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error", resp.text))
    except ValueError:
        return resp.text[:200]
