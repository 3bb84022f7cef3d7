"""HTTP plumbing shared by the /v1 and KServe v2 routes: keys from headers, bounded
JSON bodies, request schemas in the OpenAPI document, uniform JSON errors."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from movingtarget.errors import DataError, MovingTargetError, Unavailable
from movingtarget.gateway.problems import Problem, bad_request, unprocessable
from movingtarget.gateway.server.schemas import STRICT_ERRORS

log = logging.getLogger("movingtarget.gateway")
M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

#: Request-body schemas the routes declare (merged into the OpenAPI components).
BODY_SCHEMAS: dict[str, Any] = {}


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON request body."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    BODY_SCHEMAS.update(schema.pop("$defs", {}))
    BODY_SCHEMAS[model.__name__] = schema
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def json_route(
    router: APIRouter | FastAPI,
    path: str,
    body: type[BaseModel],
    response: type[BaseModel],
    errors: dict[int | str, dict[str, Any]],
    **kw: Any,
) -> Callable[[F], F]:
    """``router.post(path)`` for a route that reads its JSON body itself (:func:`read_body`,
    so the size limit holds before parsing): ``body`` is documented as its request body,
    ``response`` and ``errors`` as its answers."""
    route: Callable[[F], F] = router.post(
        path, response_model=response, responses=errors, openapi_extra=body_doc(body), **kw
    )
    return route


def token_of(request: Request) -> str:
    """The API key from ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; 401 if none."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    if key and key.strip():
        return key.strip()
    raise Problem(
        401,
        "unauthorized",
        "an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
    )


class _DuplicateKey(ValueError):
    """A JSON object with a key given twice (``json`` would keep the last silently)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def parse_json(body: bytes) -> Any:
    """``body`` parsed strictly: 400 for bad JSON or a duplicate key at any depth."""
    try:
        return json.loads(body, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        key = str(exc.args[0])
        key = key if len(key) <= 60 else key[:57] + "..."
        raise bad_request(f"duplicate key {key!r} in the JSON body", "invalid-json") from None
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"the request body is not valid JSON ({exc})", "invalid-json") from None


def check_json_type(request: Request, allow_missing: bool = False) -> None:
    """415 unless the body is declared ``application/json`` (parameters allowed);
    ``allow_missing``: a body with no Content-Type at all is taken as JSON (the Open
    Inference Protocol's clients, Triton's among them, send none)."""
    declared = request.headers.get("content-type", "")
    media = declared.partition(";")[0].strip().lower()
    if allow_missing and not media:
        return
    if media != "application/json":
        got = (media[:60] + "...") if len(media) > 60 else media or "none"
        raise Problem(
            415, "unsupported-media-type", f"content type must be application/json, got {got}"
        )


#: The binary tensor extension's header: the length of the JSON part of the body.
BINARY_HEADER = "inference-header-content-length"


async def _read_raw(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, "too-large", f"request body of {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, "too-large", f"request body over the limit of {limit} bytes")
    return bytes(body)


def _validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        wrong_type = next((e for e in errors if e.get("type") in STRICT_ERRORS), None)
        if wrong_type is not None:
            raise bad_request(_type_error(wrong_type, len(errors))) from None
        raise unprocessable(_first_error(errors)) from None
    except RecursionError:
        raise unprocessable("the request body is nested too deeply") from None


async def read_body(
    request: Request, model: type[M], limit: int, *, allow_missing_type: bool = False
) -> M:
    """The request body as ``model``: 413 past ``limit`` bytes, 415 unless it is sent as
    ``application/json`` (or with no type, where ``allow_missing_type``), 400 for bad JSON
    (duplicate keys too) or a value of the wrong JSON type, 422 for a body of the wrong
    form."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, "too-large", f"request body of {declared} bytes; the limit is {limit}")
    check_json_type(request, allow_missing_type)
    body = await _read_raw(request, limit)
    if not body:
        raise bad_request("the request body is empty; send JSON", "invalid-json")
    return _validate(model, parse_json(body))


async def read_inference_body(request: Request, model: type[M], limit: int) -> tuple[M, bytes]:
    """An Open Inference Protocol body: JSON as :func:`read_body`, or with the binary
    tensor extension (``Inference-Header-Content-Length: N``: N bytes of JSON, then the
    raw tensor bytes, any content type), the same checks on the JSON part. A plain JSON
    body may come with no Content-Type (as the protocol's clients send it); a declared
    type other than JSON is still a 415. Returns the
    parsed JSON and the bytes after it (empty for plain JSON)."""
    header = request.headers.get(BINARY_HEADER)
    if header is None:
        return await read_body(request, model, limit, allow_missing_type=True), b""
    body = await _read_raw(request, limit)
    if not header.strip().isdigit() or int(header) > len(body):
        raise bad_request(
            f"Inference-Header-Content-Length {header[:20]!r} must be the length of the JSON "
            f"part, at most the body's {len(body)} bytes",
            "invalid-json",
        )
    n = int(header)
    if n == 0:
        raise bad_request("the JSON part of the request body is empty", "invalid-json")
    return _validate(model, parse_json(body[:n])), body[n:]


def _type_error(e: Any, n: int) -> str:
    # 'labels[0].label must be an integer, got "3"'; a list's error names the list
    loc = list(e.get("loc", ()))
    if e["type"] == "json_int_list" and loc and isinstance(loc[-1], int):
        loc.pop()
    where = ""
    for p in loc:
        where += f"[{p}]" if isinstance(p, int) else f".{p}" if where else str(p)
    more = f" (and {n - 1} more problems)" if n > 1 else ""
    return f"{where or 'body'} {e['msg']}{more}"


def _first_error(errors: Any) -> str:
    # one clear message: the first problem, where it is, and how many more there are
    errs = list(errors)
    if not errs:
        return "the body does not match the schema"
    e = errs[0]
    where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
    msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {msg}{more}"


#: What a client is told of an outage: nothing about which store, where, or why.
UNAVAILABLE = "the service is unavailable; retry later"


def install_error_handlers(app: FastAPI, on_unavailable: Callable[[], None] | None = None) -> None:
    """Every error becomes ``{"error", "type", "status"}`` JSON; never a traceback.

    An outage (:class:`~movingtarget.errors.Unavailable`, or a store failing with a
    :class:`~movingtarget.errors.DataError`) is a 503 with ``Retry-After`` that reveals
    nothing internal; the detail is logged and ``on_unavailable`` counts it."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        p = unprocessable(_first_error(exc.errors()))
        return JSONResponse(p.body(), p.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not-found", 405: "method-not-allowed"}
        body = {
            "error": str(exc.detail),
            "type": kinds.get(exc.status_code, "http"),
            "status": exc.status_code,
        }
        return JSONResponse(body, exc.status_code, headers=getattr(exc, "headers", None))

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # a memory or key store that cannot be reached: the client may retry later, and
        # learns nothing of the store (the operator reads the detail in the log)
        log.error("unavailable on %s %s: %s", request.method, request.url.path, exc)
        if on_unavailable is not None:
            on_unavailable()
        body = {"error": UNAVAILABLE, "type": "unavailable", "status": 503}
        return JSONResponse(body, 503, headers={"Retry-After": "1"})

    app.add_exception_handler(Unavailable, _unavailable)
    app.add_exception_handler(DataError, _unavailable)

    @app.exception_handler(MovingTargetError)
    async def _user(request: Request, exc: MovingTargetError) -> JSONResponse:
        return JSONResponse(bad_request(str(exc)).body(), 400)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        body = {"error": "internal error", "type": "internal", "status": 500}
        return JSONResponse(body, 500)


class LatencyMiddleware:
    """Times every request into ``movingtarget_request_seconds{endpoint}`` (pure ASGI:
    no per-request task or body copy)."""

    def __init__(self, app: ASGIApp, histogram: Any) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "other")
            self.histogram.labels(endpoint).observe(time.perf_counter() - start)
