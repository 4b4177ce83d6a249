from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import code_pb2, status_pb2
from lmforge_client.status import FieldViolation, field_violations

from gateway.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    Unimplemented,
    to_grpc_status,
    to_status_proto,
)
from gateway.triton_errors import translate


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInput("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (Overloaded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (BackendUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (Unimplemented("x"), grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_each_gateway_error_maps_to_its_grpc_code(error: Exception, code: grpc.StatusCode) -> None:
    status = to_grpc_status(error)
    assert status.code == code
    assert status.details == str(error)


def test_invalid_input_carries_bad_request_field_violations() -> None:
    error = InvalidInput.from_violations(
        [FieldViolation("inputs[3]", "is empty"), FieldViolation("top_k", "must be >= 0")]
    )
    status = to_grpc_status(error)
    metadata = dict(status.trailing_metadata)
    decoded = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    assert decoded.code == code_pb2.INVALID_ARGUMENT
    assert field_violations(decoded) == list(error.violations)
    assert "inputs[3]: is empty" in error.message


def test_unknown_exception_becomes_internal_and_is_logged_with_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.errors"):
        status = to_status_proto(ZeroDivisionError("secret detail"))
    assert status.code == code_pb2.INTERNAL
    assert "secret" not in status.message
    assert caplog.records and caplog.records[0].exc_info is not None


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", BackendUnavailable),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", DeadlineExceeded),
        ("StatusCode.NOT_FOUND", "Request for unknown model: 'x' is not found", ModelNotFound),
        ("StatusCode.UNAVAILABLE", "Request for unknown model: 'x' is not found", ModelNotFound),
        (
            "StatusCode.UNAVAILABLE",
            "Request for unknown model: 'x' has no available versions",
            BackendUnavailable,
        ),
        ("StatusCode.INTERNAL", "INPUT_TOO_LONG: 40 tokens > 16", InvalidInput),
        ("StatusCode.RESOURCE_EXHAUSTED", "queue full", Overloaded),
    ],
)
def test_triton_errors_translate_to_gateway_errors(
    status: str, message: str, expected: type[Exception]
) -> None:
    assert isinstance(translate(status, message, url="h:1", model="x"), expected)
