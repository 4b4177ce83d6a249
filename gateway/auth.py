"""Who is calling, and may they call this: API keys and their allow-lists.

:class:`AccessInterceptor` is a ``grpc.aio`` server interceptor wrapped around every RPC:

1. **Authentication**: the caller sends ``authorization: Bearer <secret>``; the SHA-256 of the
   secret is looked up among the configured keys (:class:`~gateway.security_config.AuthConfig`).
   No, a malformed or an unknown key → ``UNAUTHENTICATED``. Health and reflection need no key
   where the config says so (``public_health``, ``public_reflection``).
2. **Authorization**: the key's allow-lists of RPCs and logical models (the request's
   ``model`` field) → ``PERMISSION_DENIED``. A restricted key asking for a model that does not
   exist is denied too, so keys cannot be used to list what is served.

The key's name is then the call's caller (:func:`current_caller`), which the servicer hands to
the engine: its quotas (``rate_per_s``, ``burst``, ``max_concurrent``) and every other limit
are decided by the engine's admission (:mod:`gateway.admission`), once per request.

A request message that does not parse (random bytes, a string field that is not UTF-8) is
answered ``INVALID_ARGUMENT`` here, instead of the ``UNKNOWN`` gRPC would answer.

The rules in force are one immutable :class:`AccessPolicy`, swapped by :meth:`swap` when the
config reloads: rotated keys take effect for the next call, calls in flight finish. Errors go
through :mod:`gateway.errors` like every other refusal.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import grpc
from lmforge_client.metadata import AUTHORIZATION
from prometheus_client import CollectorRegistry, Counter

from gateway.config import GatewayConfig
from gateway.errors import (
    GatewayError,
    InvalidInput,
    PermissionDenied,
    Unauthenticated,
    to_grpc_status,
)
from gateway.security_config import ApiKeyConfig

logger = logging.getLogger(__name__)

_SCHEME = "bearer"
INFERENCE_SERVICE = "lmforge.v1.InferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = frozenset(
    {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
#: the principal of calls when no keys are configured
ANONYMOUS = "anonymous"
#: the name of the API key of the call being handled (None: no key needed)
_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller", default=None)


def current_caller() -> str | None:
    """The name of the API key that authenticated the call being handled, if any."""
    return _CALLER.get()


def hash_key(secret: str) -> str:
    """The hex SHA-256 of an API key, as stored in ``auth.keys[].sha256``."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AccessPolicy:
    """The rules of one config: keys by hash, public services."""

    enabled: bool
    keys: Mapping[str, ApiKeyConfig]  # by sha256
    public_services: frozenset[str]

    @classmethod
    def from_config(cls, config: GatewayConfig) -> AccessPolicy:
        auth = config.auth
        enabled = auth is not None and auth.enabled
        public = set()
        if not enabled or (auth is not None and auth.public_health):
            public.add(HEALTH_SERVICE)
        if not enabled or (auth is not None and auth.public_reflection):
            public |= REFLECTION_SERVICES
        keys = {k.sha256: k for k in auth.keys} if auth is not None and enabled else {}
        return cls(enabled, MappingProxyType(keys), frozenset(public))


def _bearer(metadata: tuple[tuple[str, str | bytes], ...]) -> str:
    """The one bearer secret in ``metadata``; raises :class:`Unauthenticated` otherwise."""
    values = [v for k, v in metadata if k.lower() == AUTHORIZATION]
    if not values:
        raise Unauthenticated("missing 'authorization: Bearer <API key>' metadata")
    if len(values) > 1:
        raise Unauthenticated("more than one authorization header")
    value = values[0]
    if not isinstance(value, str):
        raise Unauthenticated("malformed authorization header")
    scheme, _, secret = value.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != _SCHEME or not secret:
        raise Unauthenticated("authorization must be 'Bearer <API key>'")
    return secret


@dataclass(frozen=True)
class Malformed:
    """Stands for a request message that could not be parsed (say, a string field that is
    not UTF-8): the call is answered INVALID_ARGUMENT instead of gRPC's UNKNOWN."""

    reason: str

    def error(self, method: str) -> InvalidInput:
        return InvalidInput(
            f"{_split(method)[1]}: the request is not a valid message: {self.reason}"
        )


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError and friends
            return Malformed(type(exc).__name__)

    return parse


def _model(request: Any) -> str | None:
    return None if isinstance(request, Malformed) else getattr(request, "model", None)


def _split(method: str) -> tuple[str, str]:
    service, _, rpc = method.lstrip("/").rpartition("/")
    return service, rpc


def _authorize(key: ApiKeyConfig, service: str, rpc: str, model: str | None) -> None:
    """Raise :class:`PermissionDenied` when ``key`` may not call ``rpc`` on ``model``."""
    if service != INFERENCE_SERVICE:
        return
    if rpc not in key.rpcs:
        raise PermissionDenied(f"API key {key.name!r} may not call {rpc}")
    if model is not None and "*" not in key.models and model not in key.models:
        raise PermissionDenied(f"API key {key.name!r} may not use model {model!r}")


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """See the module docstring. ``registry``: where the rejection counter is registered."""

    def __init__(self, policy: AccessPolicy, *, registry: CollectorRegistry | None = None) -> None:
        self._policy = policy
        self.rejections = Counter(
            "lmforge_gateway_access_rejections",
            "RPCs refused before any work: by reason (unauthenticated, permission_denied, "
            "overloaded, streams, concurrency) and API key name",
            ["reason", "key"],
            registry=registry if registry is not None else CollectorRegistry(),
        )

    @property
    def policy(self) -> AccessPolicy:
        return self._policy

    def swap(self, policy: AccessPolicy) -> None:
        """Apply new rules to the calls that start from now on (config reload)."""
        self._policy = policy
        logger.info("access rules reloaded: %d API keys", len(policy.keys))

    def count_rejection(self, reason: str, key: str) -> None:
        """Count a refusal made elsewhere (the engine's admission) with the ones made here."""
        self.rejections.labels(reason, key).inc()

    # -- the checks -----------------------------------------------------------------------
    def _principal(
        self, service: str, metadata: tuple[tuple[str, str | bytes], ...]
    ) -> ApiKeyConfig | None:
        """The calling key, or None where no key is needed."""
        policy = self._policy
        if not policy.enabled or service in policy.public_services:
            return None
        key = policy.keys.get(hash_key(_bearer(metadata)))
        if key is None:
            raise Unauthenticated("unknown API key")
        return key

    def identify(
        self, method: str, metadata: tuple[tuple[str, str | bytes], ...], model: str | None
    ) -> str | None:
        """The name of the key calling ``method`` (None where no key is needed), or raise the
        gateway error that refuses the call."""
        service, rpc = _split(method)
        name = ANONYMOUS
        try:
            key = self._principal(service, metadata)
            if key is None:
                return None
            name = key.name
            _authorize(key, service, rpc, model)
        except GatewayError as exc:
            self.rejections.labels(exc.kind, name).inc()
            raise
        return key.name

    def identify_call(
        self,
        rpc: str,
        authorization: Sequence[str],
        model: str | None,
        *,
        service: str = INFERENCE_SERVICE,
    ) -> str | None:
        """:meth:`identify` for another transport (the HTTP app): ``rpc`` is the
        ``service`` method the call stands for, ``authorization`` the values of its
        ``Authorization`` headers."""
        metadata = tuple((AUTHORIZATION, value) for value in authorization)
        return self.identify(f"/{service}/{rpc}", metadata, model)

    # -- gRPC plumbing ----------------------------------------------------------------------
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = str(handler_call_details.method)
        metadata = tuple(handler_call_details.invocation_metadata or ())
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, metadata),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, method, metadata),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method, metadata, with_model=False),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(handler.stream_stream, method, metadata, with_model=False),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any], exc: GatewayError) -> None:
        logger.debug("refused: %s: %s", exc.grpc_code.name, exc.message)
        await context.abort_with_status(to_grpc_status(exc))

    def _unary(
        self,
        inner: Callable[..., Any],
        method: str,
        metadata: tuple[tuple[str, str | bytes], ...],
        *,
        with_model: bool = True,
    ) -> Callable[..., Awaitable[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            model = _model(request) if with_model else None
            try:
                caller = self.identify(method, metadata, model)
            except GatewayError as exc:
                await self._refuse(context, exc)
                raise  # abort_with_status raises; not reached
            if isinstance(request, Malformed):
                await self._refuse(context, request.error(method))
            token = _CALLER.set(caller)
            try:
                return await inner(request, context)
            finally:
                _CALLER.reset(token)

        return behavior

    def _streaming(
        self,
        inner: Callable[..., Any],
        method: str,
        metadata: tuple[tuple[str, str | bytes], ...],
        *,
        with_model: bool = True,
    ) -> Callable[..., AsyncIterator[Any]]:
        async def behavior(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            model = _model(request) if with_model else None
            try:
                caller = self.identify(method, metadata, model)
            except GatewayError as exc:
                await self._refuse(context, exc)
                raise
            if isinstance(request, Malformed):
                await self._refuse(context, request.error(method))
            _CALLER.set(caller)  # this RPC's task and context: read by the handler
            result = inner(request, context)
            if inspect.isawaitable(result):  # a handler that writes with context.write
                await result
                return
            async for item in result:
                yield item

        return behavior
