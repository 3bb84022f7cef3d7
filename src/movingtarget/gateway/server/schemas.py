"""Typed request and response bodies (pydantic), for /v1 and the KServe v2 protocol."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

#: Longest query id, request id or model name the gateway accepts.
MAX_ID = 200

#: Errors of a JSON value of the wrong type (a 400 naming the field, not a 422):
#: error type -> what the field must be.
STRICT_ERRORS = {"json_int": "must be an integer", "json_int_list": "must be a list of integers"}


def shown(value: Any, width: int = 40) -> str:
    """``value`` as JSON, cut to ``width`` characters (for error messages)."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= width else text[: width - 3] + "..."


def _strict_int(kind: str) -> Any:
    # a JSON integer only: pydantic's lax mode would take "3", 3.0 and true as 3 or 1
    def check(value: Any) -> Any:
        if type(value) is int:
            return value
        raise PydanticCustomError(
            kind, "{what}, got {got}", {"what": STRICT_ERRORS[kind], "got": shown(value)}
        )

    return BeforeValidator(check)


#: An integer field: a JSON integer, never a string, a float or a boolean.
JsonInt = Annotated[int, _strict_int("json_int")]
#: An item of a list of integers (``shape``): the error names the list.
JsonIntItem = Annotated[int, _strict_int("json_int_list")]


class ClassifyRequest(BaseModel):
    """One input (``input``) or a batch (``inputs``), each a (nested) list of numbers
    of the model's input shape."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": [[0.0, 1.5, 3.0]]}, {"input": [0.0, 1.5, 3.0]}]},
    )

    inputs: list[Any] | None = Field(None, description="A batch of inputs.")
    input: list[Any] | None = Field(None, description="A single input.")

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyRequest:
        if (self.inputs is None) == (self.input is None):
            raise ValueError("give exactly one of 'input' (one input) or 'inputs' (a batch)")
        return self

    def batch(self) -> list[Any]:
        """The inputs as a batch."""
        return self.inputs if self.inputs is not None else [self.input]


class Answer(BaseModel):
    """The answer to one query: a class, or ABSTAIN (``label`` null) with the reason."""

    query_id: str = Field(description="Quote it in /v1/feedback.")
    label: int | None = Field(description="The class, or null when the gateway abstained.")
    abstained: bool
    reason: str = Field(
        description="model, repeat, near-repeat, low-confidence, adversarial-likelihood, ..."
    )


class ClassifyResponse(BaseModel):
    """Answers in the order of the inputs."""

    request_id: str
    model: str
    model_version: str
    defense: str
    answers: list[Answer]


class FeedbackItem(BaseModel):
    """The true class of an earlier query."""

    model_config = ConfigDict(extra="forbid")

    query_id: str = Field(min_length=1, max_length=MAX_ID)
    label: JsonInt = Field(ge=0, lt=2**31)


class FeedbackRequest(BaseModel):
    """Labels for earlier queries (your own: query ids are bound to your key)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"labels": [{"query_id": "QUERY-ID", "label": 3}]}]},
    )

    labels: list[FeedbackItem] = Field(min_length=1, max_length=1000)


class FeedbackResponse(BaseModel):
    """How many labels were stored, and how many repaired the defense (a labeler key's,
    for a defense that learns; 0 for any other key)."""

    stored: int
    learned: int = 0
    #: With ``--update-tolerance``, for a labeler key: the gated model update was kept,
    #: or rolled back because canary accuracy fell beyond the tolerance.
    model_update: Literal["kept", "rolled back"] | None = None


class QueuedQuery(BaseModel):
    """A query the defense asked a label for: its id (label it through /v1/feedback),
    the input, why it was asked (an answer reason) and when (milliseconds since the
    epoch)."""

    query_id: str
    input: Any
    reason: str
    asked_at: int


class LabelingQueueResponse(BaseModel):
    """The oldest queries waiting for a label, and how many wait in all."""

    pending: int
    queries: list[QueuedQuery]


class Health(BaseModel):
    """Liveness and what is served."""

    status: str
    model: str
    model_version: str
    #: The SHA-256 of the served model file (null for a DATASET:MODEL spec).
    model_sha256: str | None = None
    defense: str


class ErrorBody(BaseModel):
    """Every error: one message, a machine-readable kind, the status."""

    error: str
    type: str
    status: int


# -- Open Inference Protocol (KServe v2) -----------------------------------------------


class RequestInput(BaseModel):
    """An input tensor: name, shape, datatype, and its data (flat or nested, row-major)."""

    name: str = Field(max_length=MAX_ID)
    shape: list[JsonIntItem] = Field(max_length=8)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] | None = None
    #: absent when the tensor's bytes follow the JSON (``parameters.binary_data_size``)
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    """An output the client asks for (all are returned when none is named)."""

    name: str = Field(max_length=MAX_ID)
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """``POST /v2/models/{name}/infer``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 3],
                            "datatype": "FP32",
                            "data": [0.0, 1.5, 3.0],
                        }
                    ]
                }
            ]
        }
    )

    id: str | None = Field(None, max_length=MAX_ID)
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = Field(None, max_length=8)


class ResponseOutput(BaseModel):
    """An output tensor."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    #: absent when its bytes follow the JSON header (``parameters.binary_data_size``)
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    """The answers as tensors: ``label`` (INT64, -1 where abstained), ``abstained``
    (BOOL), ``reason`` (BYTES) and ``query_id`` (BYTES)."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    """Name, datatype and shape of a tensor (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """``GET /v2/models/{name}``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: dict[str, Any] | None = None


class ModelReady(BaseModel):
    """``GET /v2/models/{name}/ready``."""

    name: str
    ready: bool


class ServerLive(BaseModel):
    """``GET /v2/health/live``."""

    live: bool


class ServerReady(BaseModel):
    """``GET /v2/health/ready``."""

    ready: bool
