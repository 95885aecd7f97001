"""The one mapping of a SettlementError to an HTTP answer, shared by the exception handler and
the body-limits middleware (which runs outside FastAPI's exception handlers)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from settlement.errors import Busy, RequestTimeout, SettlementError, redact


def error_response(error: SettlementError, *, close: bool = False) -> JSONResponse:
    """`{"error": class name, "message": ...}` with the class's status; `close` asks the server
    to drop the connection after answering (the rest of a refused body is not worth reading)."""
    headers: dict[str, str] = {}
    if isinstance(error, Busy | RequestTimeout):
        headers["Retry-After"] = str(error.retry_after)
    elif error.http_status == 503:  # the store is down: worth a retry, not at once
        headers["Retry-After"] = "5"
    if close:
        headers["Connection"] = "close"
    # Whatever raised it, a URL in the message (W2E_RPC_URL, W2E_DATABASE_URL) goes out as
    # scheme://host:port only: anonymous clients read these bodies.
    return JSONResponse(
        {"error": type(error).__name__, "message": redact(str(error))},
        status_code=error.http_status,
        headers=headers or None,
    )
