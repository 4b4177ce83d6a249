"""Who may call what, how often: API keys, per-key quotas and the streaming limit.

:class:`AccessInterceptor` is a ``grpc.aio`` server interceptor wrapped around every RPC:

1. **Authentication**: the caller sends ``authorization: Bearer <secret>``; the SHA-256 of the
   secret is looked up among the configured keys (:class:`~gateway.security_config.AuthConfig`).
   No, a malformed or an unknown key → ``UNAUTHENTICATED``. Health and reflection need no key
   where the config says so (``public_health``, ``public_reflection``).
2. **Authorization**: the key's allow-lists of RPCs and logical models (the request's
   ``model`` field) → ``PERMISSION_DENIED``. A restricted key asking for a model that does not
   exist is denied too, so keys cannot be used to list what is served.
3. **Quotas**: per key a token bucket (``rate_per_s``, ``burst``) and a concurrency quota
   (``max_concurrent``) → ``RESOURCE_EXHAUSTED`` with a ``google.rpc.RetryInfo`` delay; and,
   with or without keys, at most ``limits.max_concurrent_streams`` streaming RPCs in flight.

A request message that does not parse (random bytes, a string field that is not UTF-8) is
answered ``INVALID_ARGUMENT`` here, instead of the ``UNKNOWN`` gRPC would answer.

The rules in force are one immutable :class:`AccessPolicy`, swapped by :meth:`swap` when the
config reloads: rotated keys take effect for the next call, calls in flight finish. Per-key
buckets and counters live on by key name across reloads. Errors go through
:mod:`gateway.errors` like every other refusal.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import grpc
from lmforge_client.metadata import AUTHORIZATION
from prometheus_client import CollectorRegistry, Counter

from gateway.config import GatewayConfig
from gateway.errors import (
    GatewayError,
    InvalidInput,
    Overloaded,
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
#: a key over its concurrency quota is told to come back after this long
CONCURRENCY_RETRY_S = 0.1
STREAM_RETRY_S = 1.0


def hash_key(secret: str) -> str:
    """The hex SHA-256 of an API key, as stored in ``auth.keys[].sha256``."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; a call takes one."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class AccessPolicy:
    """The rules of one config: keys by hash, public services, the stream limit."""

    enabled: bool
    keys: Mapping[str, ApiKeyConfig]  # by sha256
    public_services: frozenset[str]
    max_streams: int

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
        return cls(
            enabled,
            MappingProxyType(keys),
            frozenset(public),
            config.limits.max_concurrent_streams,
        )


@dataclass
class _KeyState:
    in_flight: int = 0
    bucket: TokenBucket | None = None


@dataclass
class _Lease:
    """What one admitted call holds; released exactly once when it ends."""

    state: _KeyState | None
    stream: bool
    guard: AccessInterceptor
    released: bool = field(default=False)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self.state is not None:
            self.state.in_flight -= 1
        if self.stream:
            self.guard.streams_in_flight -= 1


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


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """See the module docstring. ``registry``: where the rejection counter is registered."""

    def __init__(
        self,
        policy: AccessPolicy,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._states: dict[str, _KeyState] = {}
        self.streams_in_flight = 0
        self.rejections = Counter(
            "lmforge_gateway_access_rejections",
            "RPCs refused before reaching a handler, by reason and API key name",
            ["reason", "key"],
            registry=registry if registry is not None else CollectorRegistry(),
        )
        self._sync_states()

    @property
    def policy(self) -> AccessPolicy:
        return self._policy

    def swap(self, policy: AccessPolicy) -> None:
        """Apply new rules to the calls that start from now on (config reload)."""
        self._policy = policy
        self._sync_states()
        logger.info("access rules reloaded: %d API keys", len(policy.keys))

    def _sync_states(self) -> None:
        now = self._clock()
        current = {key.name: key for key in self._policy.keys.values()}
        for name in list(self._states):
            if name not in current and self._states[name].in_flight == 0:
                del self._states[name]
        for name, key in current.items():
            state = self._states.setdefault(name, _KeyState())
            if key.rate_per_s is None:
                state.bucket = None
                continue
            burst = key.burst or max(1, math.ceil(key.rate_per_s))
            old = state.bucket
            state.bucket = TokenBucket(key.rate_per_s, burst, now)
            if old is not None:
                state.bucket.tokens = min(float(burst), old.tokens)

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

    def admit(
        self,
        method: str,
        metadata: tuple[tuple[str, str | bytes], ...],
        model: str | None,
        *,
        stream: bool,
    ) -> _Lease:
        """Check one call; returns its lease, or raises the gateway error that refuses it."""
        service, rpc = _split(method)
        name = ANONYMOUS
        try:
            key = self._principal(service, metadata)
            name = key.name if key is not None else ANONYMOUS
            state = self._authorize(key, service, rpc, model)
        except GatewayError as exc:
            self.rejections.labels(exc.kind, name).inc()
            raise
        if stream and self.streams_in_flight >= self._policy.max_streams:
            self.rejections.labels("streams", name).inc()
            raise Overloaded(
                f"{self.streams_in_flight} streams in flight, the limit "
                f"limits.max_concurrent_streams={self._policy.max_streams}; retry later",
                retry_after=STREAM_RETRY_S,
            )
        if state is not None:
            state.in_flight += 1
        if stream:
            self.streams_in_flight += 1
        return _Lease(state, stream, self)

    def _authorize(
        self, key: ApiKeyConfig | None, service: str, rpc: str, model: str | None
    ) -> _KeyState | None:
        if key is None:
            return None
        if service == INFERENCE_SERVICE:
            if rpc not in key.rpcs:
                raise PermissionDenied(f"API key {key.name!r} may not call {rpc}")
            if model is not None and "*" not in key.models and model not in key.models:
                raise PermissionDenied(f"API key {key.name!r} may not use model {model!r}")
        state = self._states.setdefault(key.name, _KeyState())
        if key.max_concurrent is not None and state.in_flight >= key.max_concurrent:
            raise Overloaded(
                f"API key {key.name!r} has {state.in_flight} calls in flight, its quota "
                f"max_concurrent={key.max_concurrent}",
                retry_after=CONCURRENCY_RETRY_S,
            )
        if state.bucket is not None:
            wait = state.bucket.take(self._clock())
            if wait > 0:
                raise Overloaded(
                    f"API key {key.name!r} is over its rate limit "
                    f"rate_per_s={key.rate_per_s} (burst {state.bucket.burst})",
                    retry_after=wait,
                )
        return state

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
                lease = self.admit(method, metadata, model, stream=False)
            except GatewayError as exc:
                await self._refuse(context, exc)
                raise  # abort_with_status raises; not reached
            try:
                if isinstance(request, Malformed):
                    await self._refuse(context, request.error(method))
                return await inner(request, context)
            finally:
                lease.release()

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
            counted = _split(method)[0] == INFERENCE_SERVICE  # not reflection streams
            try:
                lease = self.admit(method, metadata, model, stream=counted)
            except GatewayError as exc:
                await self._refuse(context, exc)
                raise
            try:
                if isinstance(request, Malformed):
                    await self._refuse(context, request.error(method))
                result = inner(request, context)
                if inspect.isawaitable(result):  # a handler that writes with context.write
                    await result
                    return
                async for item in result:
                    yield item
            finally:
                lease.release()

        return behavior
