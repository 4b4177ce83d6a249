"""The OpenAI-compatible HTTP transport: JSON in, engine call, JSON (or server-sent events) out.

A Starlette app on ``server.http_port`` of the same process and event loop as the gRPC server,
calling the *same* engine (:class:`~gateway.engine_types.InferenceEngine`): the same routing,
batching, admission and per-key limits. Endpoints::

    POST /v1/embeddings         Embed     (input: string or strings; encoding_format; dimensions)
    POST /v1/completions        Generate, or GenerateStream with "stream": true
    POST /v1/chat/completions   the same, one user message in the model's chat template
    GET  /v1/models             ListModels
    POST /predict               Classify, in text-embeddings-inference's shape
    GET  /health                200 when every route has a ready deployment, else 503

API keys (``Authorization: Bearer <key>``) and their allow-lists are the access interceptor's
(:meth:`gateway.auth.AccessInterceptor.identify_call`), each endpoint standing for the RPC
named above. Errors are OpenAI error objects through :func:`gateway.http_errors.error_body`,
the one mapping. ``x-lmforge-routing-key`` and ``x-lmforge-deployment`` headers route as the
gRPC metadata of the same names do. :class:`HttpServer` runs the app under uvicorn as a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import uvicorn
from lmforge_client.metadata import PIN_METADATA_KEY, ROUTING_KEY_METADATA_KEY
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway import http_openai as oa
from gateway.auth import HEALTH_SERVICE, AccessInterceptor
from gateway.engine_types import GenerateRequest, GenerationChunk, InferenceEngine, Routing
from gateway.errors import BackendError, GatewayError, error_kind
from gateway.http_errors import error_body, error_headers, http_status, invalid_body
from gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

B = TypeVar("B", bound=BaseModel)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=headers)


def error_response(exc: BaseException) -> Response:
    status, _ = http_status(exc)
    return _json(error_body(exc), status, error_headers(exc))


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _parse(request: Request, model: type[B]) -> B:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise invalid_body(exc) from None


def _routing(request: Request) -> Routing:
    return Routing(
        request.headers.get(ROUTING_KEY_METADATA_KEY), request.headers.get(PIN_METADATA_KEY)
    )


class _Call:
    """One HTTP call in the gateway's per-RPC metrics (``rpc`` label ``http/<RPC>``)."""

    def __init__(self, metrics: GatewayMetrics, engine: InferenceEngine, rpc: str) -> None:
        self._metrics = metrics
        self._engine = engine
        self.rpc = f"http/{rpc}"
        self.model = ""
        self.started = time.perf_counter()
        metrics.in_flight.inc()

    def finish(self, exc: BaseException | None = None) -> None:
        model = self.model if self.model and self._engine.serves(self.model) else "unknown"
        if exc is None:
            code = "OK"
        elif isinstance(exc, asyncio.CancelledError):
            code = "CANCELLED"
            self._metrics.failures.labels(self.rpc, "cancelled").inc()
        else:
            code = exc.grpc_code.name if isinstance(exc, GatewayError) else "INTERNAL"
            self._metrics.failures.labels(self.rpc, error_kind(exc)).inc()
        self._metrics.in_flight.dec()
        self._metrics.requests.labels(self.rpc, model, code).inc()
        self._metrics.latency.labels(self.rpc, model).observe(time.perf_counter() - self.started)


class OpenAIApp:
    """See the module docstring. ``classifiers`` lists the classify routes of the config in
    force (``/predict`` without a ``model`` uses the only one)."""

    def __init__(
        self,
        engine: InferenceEngine,
        access: AccessInterceptor,
        metrics: GatewayMetrics,
        classifiers: Callable[[], Sequence[str]],
    ) -> None:
        self._engine = engine
        self._access = access
        self._metrics = metrics
        self._classifiers = classifiers
        self._created = int(time.time())
        self.app = Starlette(
            routes=[
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/predict", self.predict, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error},
        )

    # -- plumbing ----------------------------------------------------------------------------
    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's own refusals (unknown path, wrong method) as OpenAI error objects."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = exc.detail if isinstance(exc, HTTPException) else "internal error"
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                          "code": str(status)}}  # fmt: skip
        return _json(body, status)

    def _identify(self, request: Request, rpc: str, model: str | None) -> str | None:
        authorization = request.headers.getlist("authorization")
        return self._access.identify_call(rpc, authorization, model)

    async def _body(self, request: Request, model: type[B], rpc: str) -> B:
        """The parsed body; an unparsable one is refused as the key's 401/403 first."""
        try:
            return await _parse(request, model)
        except GatewayError:
            self._identify(request, rpc, None)
            raise

    # -- endpoints ---------------------------------------------------------------------------
    async def embeddings(self, request: Request) -> Response:
        call = _Call(self._metrics, self._engine, "Embed")
        try:
            body = await self._body(request, oa.EmbeddingsBody, "Embed")
            call.model = body.model
            caller = self._identify(request, "Embed", body.model)
            result = await self._engine.embed(oa.embed_request(body, _routing(request), caller))
            response = _json(oa.embeddings_response(result, body.model, body.encoding_format))
        except Exception as exc:
            call.finish(exc)
            return error_response(exc)
        call.finish()
        return response

    async def predict(self, request: Request) -> Response:
        call = _Call(self._metrics, self._engine, "Classify")
        try:
            body = await self._body(request, oa.PredictBody, "Classify")
            model = oa.model_for_predict(body, list(self._classifiers()))
            call.model = model
            caller = self._identify(request, "Classify", model)
            ask = oa.classify_request(body, model, _routing(request), caller)
            result = await self._engine.classify(ask)
            response = _json(oa.predict_response(result.results, isinstance(body.inputs, str)))
        except Exception as exc:
            call.finish(exc)
            return error_response(exc)
        call.finish()
        return response

    async def models(self, request: Request) -> Response:
        call = _Call(self._metrics, self._engine, "ListModels")
        try:
            caller = self._identify(request, "ListModels", None)
            infos = await self._engine.models(caller)
            data = [oa.model_object(info, self._created) for info in infos]
            response = _json({"object": "list", "data": data})
        except Exception as exc:
            call.finish(exc)
            return error_response(exc)
        call.finish()
        return response

    async def health(self, request: Request) -> Response:
        try:
            authorization = request.headers.getlist("authorization")
            # public unless auth.public_health: false, as grpc.health.v1 is
            self._access.identify_call("Check", authorization, None, service=HEALTH_SERVICE)
        except GatewayError as exc:
            return error_response(exc)
        ready = await self._engine.ready()
        return _json({"status": "SERVING" if ready else "NOT_SERVING"}, 200 if ready else 503)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def _generate(self, request: Request, *, chat: bool) -> Response:
        call = _Call(self._metrics, self._engine, "Generate")
        chunks: AsyncIterator[GenerationChunk] | None = None
        try:
            body: oa.ChatBody | oa.CompletionBody
            body = await self._body(request, oa.ChatBody if chat else oa.CompletionBody, "Generate")
            call.model = body.model
            rpc = "GenerateStream" if body.stream else "Generate"
            call.rpc = f"http/{rpc}"
            caller = self._identify(request, rpc, body.model)
            ask: GenerateRequest
            if isinstance(body, oa.ChatBody):
                ask = oa.chat_request(body, _routing(request), caller)
            else:
                ask = oa.completion_request(body, _routing(request), caller)
            ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
            created = int(time.time())
            chunks = self._engine.generate(ask)
            if not body.stream:
                pieces: list[str] = []
                last: GenerationChunk | None = None
                async for last in chunks:
                    pieces.append(last.text)
                if last is None:
                    raise BackendError("the generation ended without a last chunk")
                text = "".join(pieces)
                response = _json(oa.completion_object(ident, created, body.model, text, last, chat))
            else:
                # admission, validation and routing happen before the first chunk: their
                # refusals are HTTP statuses, not events of a stream already answered 200
                try:
                    first = await anext(chunks)
                except StopAsyncIteration:
                    raise BackendError("the generation ended without a last chunk") from None
                include_usage = (
                    body.stream_options is not None and body.stream_options.include_usage
                )
                events = self._events(
                    call, chunks, first, (ident, created, body.model, chat), include_usage
                )
                chunks = None  # the stream closes it now
                return StreamingResponse(
                    events,
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
        except Exception as exc:
            call.finish(exc)
            return error_response(exc)
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
        call.finish()
        return response

    async def _events(
        self,
        call: _Call,
        chunks: AsyncIterator[GenerationChunk],
        first: GenerationChunk,
        head: tuple[str, int, str, bool],
        include_usage: bool,
    ) -> AsyncIterator[str]:
        """OpenAI's chunks as server-sent events, ending ``data: [DONE]``; an error after the
        first event is sent as one ``data: {"error": …}`` event and ends the stream."""
        ident, created, model, chat = head
        failure: BaseException | None = None

        def chunk(text: str | None, finish: str | None = None, role: bool = False) -> str:
            return _sse(
                oa.chunk_object(
                    ident, created, model, chat,
                    text=text, finish=finish, role=role, include_usage=include_usage,
                )
            )  # fmt: skip

        try:
            if chat:
                yield chunk("", role=True)
            current: GenerationChunk | None = first
            while current is not None:
                if current.text:
                    yield chunk(current.text)
                if current.finish_reason is not None:
                    yield chunk(None if chat else "", oa.finish_reason(current))
                    if include_usage:
                        yield _sse(oa.usage_chunk(ident, created, model, chat, current))
                    yield "data: [DONE]\n\n"
                    return
                current = await anext(chunks, None)
            raise BackendError("the generation ended without a last chunk")
        except asyncio.CancelledError as exc:  # the client went away
            failure = exc
            raise
        except Exception as exc:
            failure = exc
            yield _sse(error_body(exc))
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
            call.finish(failure)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway's ``serve`` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class HttpServer:
    """Runs an ASGI app under uvicorn on the current event loop: ``await start()`` binds
    (raising :class:`OSError` when it cannot) and returns the port; ``await stop(grace)``."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self, grace: float) -> int:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {self._host}:{self._port} (HTTP): {exc}") from exc
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=math.ceil(max(grace, 0.0)),
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="lmforge-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it stopped
                raise OSError(f"the HTTP server on port {self.port} stopped at start")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = None
        self._task = None
