"""The gateway's error hierarchy and its one mapping onto gRPC statuses.

Every error the gateway raises on purpose is a :class:`GatewayError` subclass that carries its
gRPC status code. :func:`to_grpc_status` is the single place that turns any exception into the
``grpc.Status`` a handler aborts with: gateway errors keep their code and message (invalid
input adds a ``google.rpc.BadRequest`` detail with one field violation per problem), anything
else becomes ``INTERNAL`` with a generic message and is logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import ClassVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from lmforge_client.status import FieldViolation

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """Base of the errors the gateway reports to callers."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    #: short label used in metrics and logs
    kind: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(GatewayError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    kind = "invalid_input"

    def __init__(self, message: str, violations: Iterable[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations: tuple[FieldViolation, ...] = tuple(violations)

    @classmethod
    def from_violations(cls, violations: Iterable[FieldViolation]) -> InvalidInput:
        found = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in found[:5])
        if len(found) > 5:
            summary += f"; and {len(found) - 5} more"
        return cls(f"invalid request: {summary}", found)


class ModelNotFound(GatewayError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    kind = "model_not_found"


class Overloaded(GatewayError):
    """Too much work now; ``retry_after`` (seconds), when known, becomes a
    ``google.rpc.RetryInfo`` detail telling the caller when trying again makes sense."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    kind = "overloaded"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendUnavailable(GatewayError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    kind = "backend_unavailable"


class DeadlineExceeded(GatewayError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    kind = "deadline_exceeded"


class Unimplemented(GatewayError):
    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    kind = "unimplemented"


class Unauthenticated(GatewayError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    kind = "unauthenticated"


class PermissionDenied(GatewayError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    kind = "permission_denied"


class BackendError(GatewayError):
    """The backend answered, but not as the contract says (a deployment bug)."""

    grpc_code = grpc.StatusCode.INTERNAL
    kind = "backend_error"


def error_kind(exc: BaseException) -> str:
    """The metrics label for ``exc``."""
    return exc.kind if isinstance(exc, GatewayError) else "internal"


def to_status_proto(exc: BaseException) -> status_pb2.Status:
    """The ``google.rpc.Status`` describing ``exc`` (logs unexpected exceptions)."""
    if not isinstance(exc, GatewayError):
        logger.error("unhandled error while serving a request", exc_info=exc)
        return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
    status = status_pb2.Status(code=exc.grpc_code.value[0], message=exc.message)
    if isinstance(exc, InvalidInput) and exc.violations:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
        status.details.append(detail)
    if isinstance(exc, Overloaded) and exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(round(exc.retry_after * 1e9), 0))
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(detail)
    return status


def to_grpc_status(exc: BaseException) -> grpc.Status:
    """The ``grpc.Status`` to abort an RPC with, for ``exc``."""
    return rpc_status.to_status(to_status_proto(exc))
