"""The gateway's errors as OpenAI error objects: the HTTP transport's one mapping.

:func:`error_response` turns any exception into ``{"error": {"message", "type", "param",
"code"}}`` with its HTTP status, as :func:`gateway.errors.to_grpc_status` does for gRPC: each
:class:`~gateway.errors.GatewayError` class has one status (400, 401, 403, 404, 429 with
``Retry-After``, 503, 504, …); anything else is a 500 with a generic message, logged with its
traceback. :func:`invalid_body` turns a pydantic validation error of a request body into the
:class:`~gateway.errors.InvalidInput` the rest of the gateway raises.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from lmforge_client.status import FieldViolation
from pydantic import ValidationError

from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
)

logger = logging.getLogger(__name__)

#: error class → (HTTP status, OpenAI error ``type``); the most specific class wins
_STATUSES: tuple[tuple[type[GatewayError], int, str], ...] = (
    (InvalidInput, 400, "invalid_request_error"),
    (Unauthenticated, 401, "authentication_error"),
    (PermissionDenied, 403, "permission_error"),
    (ModelNotFound, 404, "invalid_request_error"),
    (Overloaded, 429, "rate_limit_error"),
    (Unimplemented, 501, "invalid_request_error"),
    (BackendUnavailable, 503, "service_unavailable_error"),
    (DeadlineExceeded, 504, "timeout_error"),
    (BackendError, 500, "server_error"),
)


def http_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and OpenAI error type of ``exc``."""
    for cls, status, kind in _STATUSES:
        if isinstance(exc, cls):
            return status, kind
    return 500, "server_error"


def error_body(exc: BaseException) -> dict[str, Any]:
    """The OpenAI error object describing ``exc`` (logs unexpected exceptions)."""
    if not isinstance(exc, GatewayError):
        logger.error("unhandled error while serving an HTTP request", exc_info=exc)
        return {
            "error": {
                "message": "internal error",
                "type": "server_error",
                "param": None,
                "code": "internal",
            }
        }
    _, kind = http_status(exc)
    param = None
    if isinstance(exc, InvalidInput) and exc.violations:
        param = exc.violations[0].field
    return {"error": {"message": exc.message, "type": kind, "param": param, "code": exc.kind}}


def error_headers(exc: BaseException) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` (which the openai
    clients prefer) of an :class:`Overloaded` that knows when to try again."""
    if isinstance(exc, Overloaded) and exc.retry_after is not None:
        delay = max(exc.retry_after, 0.0)
        return {
            "Retry-After": str(max(math.ceil(delay), 1)),
            "retry-after-ms": str(round(delay * 1000)),
        }
    return {}


def invalid_body(exc: ValidationError) -> InvalidInput:
    """The :class:`InvalidInput` of a request body that does not match its model."""
    violations = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        violations.append(FieldViolation(field, str(error["msg"])))
    return InvalidInput.from_violations(violations)
