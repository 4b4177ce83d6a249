"""Typed Python clients of ``lmforge.v1.InferenceService``: sync and asyncio.

>>> with LmforgeClient("127.0.0.1:50051") as client:
...     reply = client.classify("sentiment", ["great film", "dull plot"], top_k=1)
...     reply.results[0].top.label

Failed calls raise :class:`LmforgeError` with the gRPC code and any field violations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import TracebackType
from typing import Unpack

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lmforge_client._proto.lmforge.v1 import inference_service_pb2_grpc, models_pb2
from lmforge_client.auth import SyncApiKeyInterceptor, aio_interceptors
from lmforge_client.types import (
    ClassifyReply,
    EmbedReply,
    GenerateChunk,
    GenerateReply,
    GenerationKwargs,
    LmforgeError,
    ModelDescription,
    classify_reply,
    classify_request,
    embed_reply,
    embed_request,
    generate_chunk,
    generate_reply,
    generate_request,
    generate_stream_request,
    generation_options,
    model_descriptions,
    routing_metadata,
)

__all__ = [
    "AsyncLmforgeClient",
    "GenerateChunk",
    "GenerateReply",
    "LmforgeClient",
    "LmforgeError",
]

DEFAULT_TIMEOUT = 30.0
_HEALTH_NAMES: dict[int, str] = {
    v: k for k, v in health_pb2.HealthCheckResponse.ServingStatus.items()
}


def _unreachable(exc: LmforgeError) -> str:
    """The status to report while waiting, for a failed health call."""
    unreachable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return "UNREACHABLE" if exc.code in unreachable else exc.code.name


def _poll_health(check: Callable[[], str]) -> str:
    try:
        return check()
    except LmforgeError as exc:
        return _unreachable(exc)


class LmforgeClient:
    """Blocking client over one gRPC channel. ``timeout`` is the per-call deadline (s);
    ``credentials`` (e.g. :func:`gateway.tls.channel_credentials`) makes it a TLS channel;
    ``api_key`` is sent as ``authorization: Bearer ...`` on every call."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        api_key: str | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        channel = (
            grpc.insecure_channel(target)
            if credentials is None
            else grpc.secure_channel(target, credentials)
        )
        if api_key is not None:
            channel = grpc.intercept_channel(channel, SyncApiKeyInterceptor(api_key))
        self._channel = channel
        self._stub = inference_service_pb2_grpc.InferenceServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def classify(
        self,
        model: str,
        inputs: Sequence[str],
        *,
        top_k: int = 0,
        truncation: str | int = "end",
        timeout: float | None = None,
        pairs: Sequence[str] = (),
        routing_key: str | None = None,
        deployment: str | None = None,
    ) -> ClassifyReply:
        request = classify_request(model, inputs, top_k, truncation, pairs)
        metadata = routing_metadata(routing_key, deployment)
        try:
            return classify_reply(
                self._stub.Classify(request, timeout=self._deadline(timeout), metadata=metadata)
            )
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None

    def embed(
        self,
        model: str,
        inputs: Sequence[str],
        *,
        normalize: bool = True,
        dimensions: int | None = None,
        truncation: str | int = "end",
        timeout: float | None = None,
        routing_key: str | None = None,
        deployment: str | None = None,
    ) -> EmbedReply:
        request = embed_request(model, inputs, normalize, dimensions, truncation)
        metadata = routing_metadata(routing_key, deployment)
        try:
            return embed_reply(
                self._stub.Embed(request, timeout=self._deadline(timeout), metadata=metadata)
            )
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        timeout: float | None = None,
        routing_key: str | None = None,
        deployment: str | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> GenerateReply:
        """The whole completion of ``prompt`` (options: :class:`GenerationOptions`)."""
        request = generate_request(model, prompt, generation_options(options))
        metadata = routing_metadata(routing_key, deployment)
        try:
            response = self._stub.Generate(
                request, timeout=self._deadline(timeout), metadata=metadata
            )
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None
        return generate_reply(response)

    def generate_stream(
        self,
        model: str,
        prompt: str,
        *,
        timeout: float | None = None,
        routing_key: str | None = None,
        deployment: str | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> Iterator[GenerateChunk]:
        """The completion as it is produced; closing the iterator early cancels the call
        (and the generation)."""
        request = generate_stream_request(model, prompt, generation_options(options))
        call = self._stub.GenerateStream(
            request,
            timeout=self._deadline(timeout),
            metadata=routing_metadata(routing_key, deployment),
        )
        try:
            for message in call:
                yield generate_chunk(message)
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None
        finally:
            call.cancel()

    def list_models(self, *, timeout: float | None = None) -> list[ModelDescription]:
        try:
            response = self._stub.ListModels(
                models_pb2.ListModelsRequest(), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None
        return model_descriptions(response)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """``"SERVING"``, ``"NOT_SERVING"``, ... for ``service`` ("" = the whole server)."""
        try:
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None
        return _HEALTH_NAMES[int(response.status)]

    def wait_for_health(
        self, status: str = "SERVING", timeout: float = 120.0, interval: float = 0.1
    ) -> None:
        """Block until the gateway's overall health is ``status``; ``TimeoutError`` after
        ``timeout`` seconds. An unreachable gateway (port not open yet) counts as
        ``UNREACHABLE``."""
        deadline = time.monotonic() + timeout
        current = "UNREACHABLE"
        while time.monotonic() < deadline:
            current = _poll_health(lambda: self.health(timeout=min(interval * 5, 2.0)))
            if current == status:
                return
            time.sleep(interval)
        raise TimeoutError(f"gateway {self.target} is {current}, not {status}, after {timeout} s")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> LmforgeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncLmforgeClient:
    """asyncio client over one ``grpc.aio`` channel; create it inside a running loop.
    ``credentials`` and ``api_key`` as for :class:`LmforgeClient`."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        api_key: str | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        interceptors = aio_interceptors(api_key)
        self._channel = (
            grpc.aio.insecure_channel(target, interceptors=interceptors)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials, interceptors=interceptors)
        )
        self._stub = inference_service_pb2_grpc.InferenceServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    async def classify(
        self,
        model: str,
        inputs: Sequence[str],
        *,
        top_k: int = 0,
        truncation: str | int = "end",
        timeout: float | None = None,
        pairs: Sequence[str] = (),
        routing_key: str | None = None,
        deployment: str | None = None,
    ) -> ClassifyReply:
        request = classify_request(model, inputs, top_k, truncation, pairs)
        metadata = routing_metadata(routing_key, deployment)
        try:
            response = await self._stub.Classify(
                request, timeout=self._deadline(timeout), metadata=metadata
            )
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None
        return classify_reply(response)

    async def embed(
        self,
        model: str,
        inputs: Sequence[str],
        *,
        normalize: bool = True,
        dimensions: int | None = None,
        truncation: str | int = "end",
        timeout: float | None = None,
        routing_key: str | None = None,
        deployment: str | None = None,
    ) -> EmbedReply:
        request = embed_request(model, inputs, normalize, dimensions, truncation)
        metadata = routing_metadata(routing_key, deployment)
        try:
            response = await self._stub.Embed(
                request, timeout=self._deadline(timeout), metadata=metadata
            )
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None
        return embed_reply(response)

    async def generate(
        self,
        model: str,
        prompt: str,
        *,
        timeout: float | None = None,
        routing_key: str | None = None,
        deployment: str | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> GenerateReply:
        """The whole completion of ``prompt`` (options: :class:`GenerationOptions`)."""
        request = generate_request(model, prompt, generation_options(options))
        metadata = routing_metadata(routing_key, deployment)
        try:
            response = await self._stub.Generate(
                request, timeout=self._deadline(timeout), metadata=metadata
            )
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None
        return generate_reply(response)

    async def generate_stream(
        self,
        model: str,
        prompt: str,
        *,
        timeout: float | None = None,
        routing_key: str | None = None,
        deployment: str | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> AsyncIterator[GenerateChunk]:
        """The completion as it is produced; leaving the loop early (or cancelling the task)
        cancels the call, and with it the generation."""
        request = generate_stream_request(model, prompt, generation_options(options))
        call = self._stub.GenerateStream(
            request,
            timeout=self._deadline(timeout),
            metadata=routing_metadata(routing_key, deployment),
        )
        try:
            async for message in call:
                yield generate_chunk(message)
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def list_models(self, *, timeout: float | None = None) -> list[ModelDescription]:
        try:
            response = await self._stub.ListModels(
                models_pb2.ListModelsRequest(), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None
        return model_descriptions(response)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as exc:
            raise LmforgeError.from_rpc_error(exc) from None
        return _HEALTH_NAMES[int(response.status)]

    async def wait_for_health(
        self, status: str = "SERVING", timeout: float = 120.0, interval: float = 0.05
    ) -> None:
        """Wait until the gateway's overall health is ``status``; ``TimeoutError`` after
        ``timeout`` seconds (see :meth:`LmforgeClient.wait_for_health`)."""
        deadline = time.monotonic() + timeout
        current = "UNREACHABLE"
        while time.monotonic() < deadline:
            try:
                current = await self.health(timeout=min(interval * 5, 2.0))
            except LmforgeError as exc:
                current = _unreachable(exc)
            if current == status:
                return
            await asyncio.sleep(interval)
        raise TimeoutError(f"gateway {self.target} is {current}, not {status}, after {timeout} s")

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncLmforgeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
