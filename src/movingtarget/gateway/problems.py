"""HTTP problems: user errors that carry a status code, and the JSON body they become.

Every error body the gateway sends has the same form, which is also what the Open
Inference Protocol (KServe v2) expects of errors::

    {"error": "<one clear message>", "type": "<machine-readable kind>", "status": 400}
"""

from __future__ import annotations

from typing import Any

from movingtarget.errors import MovingTargetError


class Problem(MovingTargetError):
    """A refused request: an HTTP status, a kind, one message, optional headers.

    Examples
    --------
    >>> p = Problem(429, "rate-limited", "slow down", retry_after=3)
    >>> p.body()["status"], p.headers["Retry-After"]
    (429, '3')
    """

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        #: The name of the (known) key refused, for the operator's per-key counts.
        self.key = key
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(max(1, int(retry_after)))
        if status == 401:
            self.headers.setdefault("WWW-Authenticate", 'Bearer realm="movingtarget"')

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": self.message, "type": self.kind, "status": self.status}


def bad_request(message: str, kind: str = "invalid-input") -> Problem:
    """A 400 (malformed input: shape, dtype, values)."""
    return Problem(400, kind, message)


def unprocessable(message: str) -> Problem:
    """A 422 (a body that does not match the endpoint's schema)."""
    return Problem(422, "invalid-body", message)
