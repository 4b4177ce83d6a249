"""The ``google.rpc`` details the gateway attaches to a failed call, read on the client side."""

from __future__ import annotations

from dataclasses import dataclass

from google.rpc import error_details_pb2, status_pb2


@dataclass(frozen=True)
class FieldViolation:
    """One problem with one request field, e.g. ``FieldViolation("inputs[3]", "is empty")``."""

    field: str
    description: str


def field_violations(status: status_pb2.Status) -> list[FieldViolation]:
    """The ``BadRequest`` field violations inside a decoded ``google.rpc.Status``."""
    found: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
    return found


def retry_delay(status: status_pb2.Status) -> float | None:
    """The ``RetryInfo`` delay (seconds) inside a decoded ``google.rpc.Status``, if any."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToNanoseconds()) / 1e9
    return None
