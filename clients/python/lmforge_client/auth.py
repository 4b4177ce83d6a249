"""Client-side interceptors that add ``authorization: Bearer <API key>`` to every call.

Used by the typed clients (:mod:`lmforge_client.client`) so the key travels on plaintext channels
too (gRPC's call credentials need TLS); over TLS it is just as good.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import grpc

from lmforge_client.metadata import AUTHORIZATION, bearer

bearer_metadata = bearer


def _with_key(metadata: Any, api_key: str) -> tuple[tuple[str, str | bytes], ...]:
    kept = tuple((k, v) for k, v in (metadata or ()) if k.lower() != AUTHORIZATION)
    return (*kept, bearer_metadata(api_key))


class _SyncDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class SyncApiKeyInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """For ``grpc.intercept_channel``."""

    def __init__(self, api_key: str) -> None:
        self._key = api_key

    def _details(self, details: Any) -> _SyncDetails:
        return _SyncDetails(
            details.method,
            details.timeout,
            _with_key(details.metadata, self._key),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)


class _AioBase:
    def __init__(self, api_key: str) -> None:
        self._key = api_key

    def _details(self, details: Any) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_key(details.metadata, self._key)),
            details.credentials,
            details.wait_for_ready,
        )


class AioUnaryApiKeyInterceptor(_AioBase, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class AioStreamApiKeyInterceptor(_AioBase, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


def aio_interceptors(api_key: str | None) -> list[grpc.aio.ClientInterceptor] | None:
    if api_key is None:
        return None
    return [AioUnaryApiKeyInterceptor(api_key), AioStreamApiKeyInterceptor(api_key)]
