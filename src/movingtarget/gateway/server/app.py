"""The FastAPI application: /v1 routes, the KServe v2 routes, health and metrics.

=====================  =============================================================
endpoint               what
=====================  =============================================================
POST /v1/classify      answer one input or a batch (class or ABSTAIN, reason, query id)
POST /v1/feedback      true labels for earlier query ids (stored for active learning)
GET  /v1/labeling-queue  queries the defense asked labels for (labeler keys only)
GET  /healthz          liveness and readiness (no key)
GET  /metrics          Prometheus metrics
GET  /docs             OpenAPI documentation (no key), /openapi.json
/v2/...                the Open Inference Protocol (KServe v2 REST), see kserve.py
=====================  =============================================================
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool

from movingtarget import __version__ as _pkg_version
from movingtarget.answers import Answers
from movingtarget.gateway.access.ids import request_id
from movingtarget.gateway.problems import Problem, bad_request
from movingtarget.gateway.server.http import (
    BODY_SCHEMAS,
    LatencyMiddleware,
    install_error_handlers,
    json_route,
    read_body,
    token_of,
)
from movingtarget.gateway.server.inputs import batch_from_json
from movingtarget.gateway.server.kserve import router as kserve_router
from movingtarget.gateway.server.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    LabelingQueueResponse,
)
from movingtarget.gateway.server.service import Gateway

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Malformed input (shape, dtype, non-finite values, bad JSON).",
        401: "No API key, or an unknown one.",
        403: "The API key was revoked.",
        413: "Too many inputs, a body over the size limit, or more queries than the key's "
        "burst or quota can ever take (send fewer per request).",
        415: "The body is not sent as application/json.",
        422: "The body does not match the schema.",
        429: "Over the key's rate limit or quota; see Retry-After.",
        503: "An outage (a memory or key store cannot be reached); see Retry-After.",
    }.items()
}


def answers_json(
    query_ids: list[str], answers: Answers, reasons: list[str]
) -> list[dict[str, Any]]:
    """The ``answers`` list of a classify response."""
    out = []
    for qid, label, reason in zip(
        query_ids, answers.labels.tolist(), answers.reasons.tolist(), strict=True
    ):
        abstained = label < 0
        out.append(
            {
                "query_id": qid,
                "label": None if abstained else label,
                "abstained": abstained,
                "reason": reasons[reason],
            }
        )
    return out


#: Most queued queries one /v1/labeling-queue response lists.
MAX_QUEUE_PAGE = 1000


def _limit(text: str | None) -> int:
    """The ``limit`` query parameter: 100 by default, an integer in [1, 1000]."""
    if text is None:
        return 100
    # ASCII digits, and few of them: int() refuses (ValueError) very long digit strings
    ok = text.isascii() and text.isdigit() and len(text) <= 4
    if not ok or not 1 <= int(text) <= MAX_QUEUE_PAGE:
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise bad_request(f"limit must be an integer in [1, {MAX_QUEUE_PAGE}], got {shown!r}")
    return int(text)


def create_app(gateway: Gateway) -> FastAPI:
    """The ASGI app serving ``gateway`` (started and stopped with the server)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    served = gateway.served
    app = FastAPI(
        title="movingtarget gateway",
        version=_pkg_version,
        summary=f"{served.name} behind {gateway.defense.describe()}",
        description=(
            "A classifier behind a dynamic defense. Every endpoint except health needs an "
            "API key (`Authorization: Bearer KEY` or `X-API-Key: KEY`). An answer is a "
            "class or an explicit abstention with its reason."
        ),
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    install_error_handlers(app, gateway.metrics.refusals.labels("unavailable").inc)
    app.add_middleware(LatencyMiddleware, histogram=gateway.metrics.latency)
    reason_labels = gateway.metrics.reason_labels
    cfg = gateway.config
    domain = served.domain_for(cfg.input_range)
    clipped = gateway.metrics.clipped

    def to_domain(x: NDArray[np.float32], where: str) -> NDArray[np.float32]:
        """``x`` refused (422 out-of-domain, counted as a refusal inside
        ``gateway.refusing``) or clipped as ``--out-of-domain`` says."""
        if domain is None:
            return x
        x, n = domain.apply(x, cfg.out_of_domain, where)
        if n:
            clipped.inc(n)
        return x

    app.state.domain = domain
    app.state.to_domain = to_domain

    @json_route(app, "/v1/classify", ClassifyRequest, ClassifyResponse, _ERRORS, tags=["v1"])
    async def classify(request: Request) -> Response:
        """Classify one input or a batch; each answer is a class or ABSTAIN with a reason."""
        token = token_of(request)
        rid = request_id(request.headers.get("x-request-id"))
        with gateway.batcher.arriving() as arrival:  # a batch being gathered waits for it
            async with gateway.refusing(token):
                body = await read_body(request, ClassifyRequest, cfg.max_body_bytes)
                x = batch_from_json(body.batch(), served.input_shape, cfg.max_inputs)
                x = to_domain(x, "inputs")
            grant = await gateway.authorize(token, len(x))
            query_ids, answers = await gateway.classify(x, grant, rid, arrival)
        content = {
            "request_id": rid,
            "model": served.name,
            "model_version": served.version,
            "defense": gateway.defense.name,
            "answers": answers_json(query_ids, answers, reason_labels),
        }
        return JSONResponse(content, headers={"X-Request-ID": rid})

    @json_route(app, "/v1/feedback", FeedbackRequest, FeedbackResponse, _ERRORS, tags=["v1"])
    async def feedback(request: Request) -> Response:
        """Store true labels of earlier queries. Any key may label its own queries: the
        labels are stored for the record and never change an answer. A labeler key
        (``--labeler-key``) may label any recent query, and for a defense that learns
        (``correct``, a gated update) its labels repair the defense (``learned``)."""
        token = token_of(request)
        async with gateway.refusing(token):
            body = await read_body(request, FeedbackRequest, cfg.max_body_bytes)
        grant = await gateway.authorize(token, 0)
        k = served.n_classes
        labeler = gateway.repairs and grant.name in gateway.labelers
        for item in body.labels:
            if not labeler and not gateway.ids.check(item.query_id, grant.key_id):
                raise bad_request(f"query id {item.query_id!r} was not issued to this key")
            if item.label >= k:
                raise bad_request(f"label {item.label} is not a class in [0, {k})")
        items = [(i.query_id, i.label) for i in body.labels]
        learned, update = await gateway.repair(grant, items) if labeler else (0, None)
        stored = await run_in_threadpool(gateway.keys.add_feedback, grant.key_id, items)
        content: dict[str, Any] = {"stored": stored, "learned": learned}
        if update is not None:  # only a labeler's labels update the model
            content["model_update"] = "kept" if update.accepted else "rolled back"
        return JSONResponse(content)

    queue_errors: dict[int | str, dict[str, Any]] = {c: _ERRORS[c] for c in (400, 401, 429, 503)}
    queue_errors[403] = {"model": ErrorBody, "description": "Not a labeler key, or revoked."}
    queue_errors[404] = {
        "model": ErrorBody,
        "description": "No labeling queue: no --labeler-key, or a defense that does not learn.",
    }

    @app.get(
        "/v1/labeling-queue",
        response_model=LabelingQueueResponse,
        responses=queue_errors,
        tags=["v1"],
    )
    async def labeling_queue(request: Request) -> Response:
        """The queries the defense asked labels for (oldest first, ``?limit=`` of them, 100
        by default, at most 1000), for a labeler key only: label them through
        ``/v1/feedback`` by query id, on any replica. Any other key gets 403 and nothing
        else, whether or not a queue exists."""
        grant = await gateway.authorize(token_of(request), 0)
        if grant.name not in gateway.labelers:
            # the same answer whatever the queue holds, or whether there is one
            raise Problem(403, "forbidden", "only a labeler key may read the labeling queue")
        if gateway.queue is None:
            raise Problem(
                404,
                "not-found",
                "no labeling queue: this gateway's defense does not learn from labels",
            )
        limit = _limit(request.query_params.get("limit"))
        pending, entries = await gateway.labeling_queue(limit)
        shape = served.input_shape
        queries = [
            {
                "query_id": e.query_id,
                "input": e.x.reshape(shape).tolist(),
                "reason": e.reason,
                "asked_at": e.time,
            }
            for e in entries
        ]
        return JSONResponse({"pending": pending, "queries": queries})

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Response:
        """Liveness; needs no key. 503 while starting or stopping."""
        content = {
            "status": "ok" if gateway.ready else "starting",
            "model": served.name,
            "model_version": served.version,
            "model_sha256": served.sha256,
            "defense": gateway.defense.name,
        }
        return JSONResponse(content, status_code=200 if gateway.ready else 503)

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Not ready."}})
    async def readyz() -> Response:
        """Readiness; needs no key: 503 unless started and the key store and every memory
        store can be reached (a load balancer takes the replica out)."""
        checks = await gateway.readiness()
        ok = all(checks.values())
        content = {"status": "ready" if ok else "unavailable", "checks": checks}
        return JSONResponse(content, status_code=200 if ok else 503)

    @app.get("/metrics", responses=_ERRORS, tags=["health"])
    async def metrics(request: Request) -> Response:
        """Prometheus metrics (text exposition format)."""
        await gateway.authorize(token_of(request), 0)
        return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)

    app.include_router(kserve_router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(BODY_SCHEMAS)
            components["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            schema["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
