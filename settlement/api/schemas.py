"""Pydantic models of the API's bodies, for validation of small bodies and the OpenAPI docs.

POST /v1/receipts does not validate through these (one model per receipt would cost
more than verifying its signature): its body is parsed once by orjson, see api/wire.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Address = Field(pattern=r"^0x[0-9a-fA-F]{40}$", examples=["0x" + "ab" * 20])
Bytes32 = Field(pattern=r"^0x[0-9a-fA-F]{64}$", examples=["0x" + "cd" * 32])


class ReceiptBatch(BaseModel):
    """Body of POST /v1/receipts (documentation only)."""

    receipts: list[dict[str, Any]] = Field(
        description=(
            "Wire receipts of PROTOCOL section 2, up to W2E_MAX_BATCH (default 10,000) items; "
            "more is 413. Each item gets its verdict at its index; an item that is not a "
            "valid receipt gets MALFORMED in place, the batch is never refused for it."
        ),
        examples=[
            [
                {
                    "kind": "view",
                    "sessionId": "0x" + "11" * 32,
                    "viewer": "0x" + "22" * 20,
                    "contentId": "0x" + "33" * 32,
                    "startedAt": 1767225500,
                    "watchSeconds": 16,
                    "issuedAt": 1767225600,
                    "signature": "0x" + "44" * 65,
                }
            ]
        ],
    )


class ItemVerdictOut(BaseModel):
    """The verdict of one receipt, at its index in the request."""

    index: int
    verdict: Literal["accepted", "duplicate", "stale", "rejected"]
    reason: str | None = Field(
        description="reason code of PROTOCOL section 3 when rejected (MALFORMED, CONFLICT, ...)"
    )
    detail: str | None = Field(description="what was wrong, for humans; not stable")


class IngestOut(BaseModel):
    """Answer of POST /v1/receipts: sent only after the batch is committed."""

    results: list[ItemVerdictOut] = Field(description="one per receipt, in request order")
    summary: dict[str, int] = Field(description="counts by verdict and by rejection reason")


class ErrorOut(BaseModel):
    """Any refusal of a whole request: the error class and what to do about it."""

    error: str = Field(examples=["PayloadTooLarge"])
    message: str


class NodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Address
    label: str = Field(min_length=1, max_length=64, examples=["edge-fra-1"])
    active: bool = True


class ContentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contentId: str = Bytes32
    creator: str = Address


class ViewerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Address


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "admin token missing or wrong (or admin disabled)"},
    408: {
        "model": ErrorOut,
        "description": "body not received within W2E_BODY_TIMEOUT; see Retry-After",
    },
    413: {
        "model": ErrorOut,
        "description": "body above the route's limit (W2E_MAX_BODY_BYTES for receipts) "
        "or more than W2E_MAX_BATCH receipts",
    },
    422: {
        "model": ErrorOut,
        "description": 'body is not JSON or not {"receipts": [...]}, or nests deeper than '
        "W2E_MAX_JSON_DEPTH or holds more than W2E_MAX_JSON_ELEMENTS elements",
    },
    429: {"model": ErrorOut, "description": "per-client rate limit; see Retry-After"},
    503: {"model": ErrorOut, "description": "too many batches in flight; see Retry-After"},
}


class NodeOut(BaseModel):
    address: str
    label: str
    active: bool


class ContentOut(BaseModel):
    contentId: str
    creator: str


class RegistriesIn(BaseModel):
    """A registries document, as `settlement simulate` writes registries.json."""

    model_config = ConfigDict(extra="forbid")
    nodes: list[NodeIn] = []
    content: list[ContentIn] = []
    viewers: list[str] = []


class RegistrationIn(BaseModel):
    """A node's signed EIP-712 `NodeRegistration(address node,string label,uint64 issuedAt)`."""

    model_config = ConfigDict(extra="forbid")
    node: str = Address
    label: str = Field(max_length=64, examples=["edge-fra-1"])
    issuedAt: int | str = Field(description="unix seconds; uint64")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="65 bytes r || s || v")


class RegistrationOut(BaseModel):
    id: int
    node: str
    label: str
    issuedAt: int
    status: Literal["pending", "approved", "rejected"]
    requestedAt: int
    decidedAt: int | None
