"""The Open Inference Protocol (KServe v2 REST), so KServe, Triton and MLServer clients
work unchanged.

An abstention is an explicit output, never a fake class: ``infer`` returns the
tensors ``label`` (INT64, ``-1`` where the gateway abstained), ``abstained`` (BOOL),
``reason`` (BYTES: ``model``, ``repeat``, ...) and ``query_id`` (BYTES, for
``/v1/feedback``). The input is one tensor of shape ``[n, *input_shape]``.

The binary tensor extension is supported both ways (what Triton's ``tritonclient``
sends by default): a request with ``Inference-Header-Content-Length: N`` carries N bytes
of JSON, then each input whose ``parameters.binary_data_size`` is set as raw
little-endian bytes; outputs asked for with ``parameters.binary_data`` (or all, with the
request's ``parameters.binary_data_output``) come back the same way (BYTES elements as a
4-byte little-endian length, then the bytes).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from movingtarget import __version__
from movingtarget.gateway.access.ids import request_id
from movingtarget.gateway.problems import Problem
from movingtarget.gateway.server.http import json_route, read_inference_body, token_of
from movingtarget.gateway.server.inputs import batch_from_binary, batch_from_tensor
from movingtarget.gateway.server.schemas import (
    ErrorBody,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerReady,
)
from movingtarget.gateway.server.service import Gateway

router = APIRouter(prefix="/v2", tags=["kserve-v2"])


@router.get("")
async def server_metadata() -> dict[str, Any]:
    """Server metadata (no key): name, version and the protocol extensions supported."""
    return {"name": "movingtarget", "version": __version__, "extensions": ["binary_tensor_data"]}


def _binary(values: list[Any], datatype: str) -> bytes:
    """One output tensor's raw bytes (the binary tensor extension)."""
    if datatype == "BYTES":
        parts = [str(v).encode() for v in values]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    dtype = {"INT64": "<i8", "BOOL": "u1"}[datatype]
    return np.asarray(values).astype(dtype).tobytes()


#: Output tensors of ``infer``: name -> datatype.
OUTPUTS = {"label": "INT64", "abstained": "BOOL", "reason": "BYTES", "query_id": "BYTES"}
_ERR: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorBody} for c in (400, 401, 403, 404, 413, 415, 422, 429, 503)
}


def _gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def _model(gw: Gateway, name: str, version: str | None = None) -> None:
    if name != gw.served.name:
        raise Problem(
            404,
            "not-found",
            f"model {name!r} is not served here; this gateway serves {gw.served.name!r}",
        )
    if version is not None and version != gw.served.version:
        raise Problem(
            404,
            "not-found",
            f"model {name!r} has no version {version!r}; it serves version {gw.served.version!r}",
        )


@router.get("/health/live", response_model=ServerLive)
async def live() -> dict[str, bool]:
    """The server is up (no key)."""
    return {"live": True}


@router.get("/health/ready", response_model=ServerReady)
async def ready(request: Request) -> Response:
    """The server can answer (no key): started, key store and memories reachable."""
    ok = all((await _gateway(request).readiness()).values())
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


def _metadata(gw: Gateway, request: Request) -> dict[str, Any]:
    shape = [-1, *gw.served.input_shape]
    parameters: dict[str, Any] = {
        "defense": gw.defense.describe(),
        "n_classes": gw.served.n_classes,
        "format": gw.served.format,
    }
    if gw.served.sha256 is not None:
        parameters["model_sha256"] = gw.served.sha256
    domain = request.app.state.domain
    if domain is not None:
        lo, hi = domain.bounds(gw.served.input_shape)
        parameters["input_domain"] = {
            "lo": lo,
            "hi": hi,
            "source": domain.source,
            "out_of_domain": gw.config.out_of_domain,
        }
    return {
        "name": gw.served.name,
        "versions": [gw.served.version],
        "platform": "movingtarget",
        # the model file's own input: a client built from the graph finds it here
        "inputs": [{"name": gw.served.input_name, "datatype": gw.served.datatype, "shape": shape}],
        "outputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in OUTPUTS.items()],
        "parameters": parameters,
    }


@router.get("/models/{name}", response_model=ModelMetadata, responses=_ERR)
async def metadata(name: str, request: Request) -> Response:
    """Model metadata: input and output tensors."""
    gw = _gateway(request)
    await gw.authorize(token_of(request), 0)
    _model(gw, name)
    return JSONResponse(_metadata(gw, request))


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=_ERR)
async def metadata_version(name: str, version: str, request: Request) -> Response:
    """Metadata of one version (the served one)."""
    gw = _gateway(request)
    await gw.authorize(token_of(request), 0)
    _model(gw, name, version)
    return JSONResponse(_metadata(gw, request))


@router.get("/models/{name}/ready", response_model=ModelReady, responses=_ERR)
async def model_ready(name: str, request: Request) -> Response:
    """Whether the model can answer."""
    gw = _gateway(request)
    await gw.authorize(token_of(request), 0)
    _model(gw, name)
    ok = all((await gw.readiness()).values())
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    gw = _gateway(request)
    token = token_of(request)
    with gw.batcher.arriving() as arrival:  # a batch being gathered waits for it
        async with gw.refusing(token):
            _model(gw, name, version)
            body, raw = await read_inference_body(
                request, InferenceRequest, gw.config.max_body_bytes
            )
            tensor = body.inputs[0]
            size = (tensor.parameters or {}).get("binary_data_size")
            if size is not None:
                if type(size) is not int or not 0 <= size <= len(raw) or tensor.data is not None:
                    raise Problem(
                        400,
                        "invalid-input",
                        "inputs[0].parameters.binary_data_size must be the byte count of its "
                        f"binary data ({len(raw)} bytes follow the JSON), with no 'data'",
                    )
                x = batch_from_binary(
                    raw[:size],
                    tensor.shape,
                    tensor.datatype,
                    gw.served.input_shape,
                    gw.config.max_inputs,
                )
            elif tensor.data is None:
                raise Problem(400, "invalid-input", "inputs[0] has no 'data' (nor binary data)")
            else:
                x = batch_from_tensor(
                    tensor.data,
                    tensor.shape,
                    tensor.datatype,
                    gw.served.input_shape,
                    gw.config.max_inputs,
                )
            x = request.app.state.to_domain(x, "inputs[0].data")
            wanted = [o.name for o in body.outputs] if body.outputs else list(OUTPUTS)
            unknown = [w for w in wanted if w not in OUTPUTS]
            if unknown:
                raise Problem(
                    400,
                    "invalid-input",
                    f"unknown output {unknown[0]!r}; outputs are {', '.join(OUTPUTS)}",
                )
        grant = await gw.authorize(token, len(x))
        rid = request_id(body.id or request.headers.get("x-request-id"))
        query_ids, answers = await gw.classify(x, grant, rid, arrival)
    labels = gw.metrics.reason_labels
    n = len(x)
    values = {
        "label": answers.labels.tolist(),
        "abstained": (answers.labels < 0).tolist(),
        "reason": [labels[r] for r in answers.reasons.tolist()],
        "query_id": query_ids,
    }
    all_binary = bool((body.parameters or {}).get("binary_data_output"))
    binary = {o.name for o in body.outputs or [] if (o.parameters or {}).get("binary_data")}
    outputs, chunks = [], []
    for w in wanted:
        out: dict[str, Any] = {"name": w, "shape": [n], "datatype": OUTPUTS[w]}
        if all_binary or w in binary:
            chunk = _binary(values[w], OUTPUTS[w])
            out["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            out["data"] = values[w]
        outputs.append(out)
    content = {
        "model_name": gw.served.name,
        "model_version": gw.served.version,
        "id": body.id if body.id is not None else rid,  # the protocol echoes the client's id
        "parameters": {"defense": gw.defense.name, "request_id": rid},
        "outputs": outputs,
    }
    if not chunks:
        return JSONResponse(content, headers={"X-Request-ID": rid})
    header = json.dumps(content, separators=(",", ":")).encode()
    return Response(
        header + b"".join(chunks),
        media_type="application/octet-stream",
        headers={"X-Request-ID": rid, "Inference-Header-Content-Length": str(len(header))},
    )


@json_route(router, "/models/{name}/infer", InferenceRequest, InferenceResponse, _ERR)
async def infer(name: str, request: Request) -> Response:
    """Inference; abstentions are the ``abstained`` and ``reason`` outputs."""
    return await _infer(request, name, None)


@json_route(
    router, "/models/{name}/versions/{version}/infer", InferenceRequest, InferenceResponse, _ERR
)
async def infer_version(name: str, version: str, request: Request) -> Response:
    """Inference on one version (the served one)."""
    return await _infer(request, name, version)
