"""The OpenAI-compatible HTTP app against a fake engine: it only translates JSON ↔ engine types
and engine errors → OpenAI error objects with their HTTP status (ASGI in-process, no sockets);
and, at the end, the whole gateway serving it on a real port next to gRPC."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest

from gateway.auth import AccessInterceptor, AccessPolicy, hash_key
from gateway.config import GatewayConfig
from gateway.engine_types import (
    ClassifyRequest,
    EmbedRequest,
    GenerateRequest,
    GenerationChunk,
    Routing,
)
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
)
from gateway.http_app import OpenAIApp
from gateway.metrics import GatewayMetrics
from gateway.server import GatewayServer
from tests.fake_backend import FakeBackend
from tests.fake_engine import SERVED, FakeEngine

MODELS = [
    {"name": "m", "task": "classify", "triton_model": "m"},
    {"name": "other", "task": "embed", "triton_model": "other"},
]
KEYS = {
    "auth": {
        "keys": [
            {"name": "alice", "sha256": hash_key("secret-a"), "models": ["m"]},
            {"name": "bob", "sha256": hash_key("secret-b"), "models": ["other"], "rpcs": ["Embed"]},
        ]
    }
}


def make_app(
    engine: FakeEngine, *, keys: bool = False, classifiers: tuple[str, ...] = ("m",)
) -> OpenAIApp:
    config = GatewayConfig.from_mapping({"models": MODELS, **(KEYS if keys else {})})
    access = AccessInterceptor(AccessPolicy.from_config(config))
    return OpenAIApp(engine, access, GatewayMetrics(), lambda: classifiers)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def http(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(engine).app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


def events(response: httpx.Response) -> list[Any]:
    """The ``data:`` payloads of a server-sent event stream (``[DONE]`` kept as a string)."""
    assert response.headers["content-type"].startswith("text/event-stream")
    out: list[Any] = []
    for block in response.text.split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- embeddings --------------------------------------------------------------------------------
async def test_embeddings_become_one_engine_request_and_openai_vectors(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    reply = await http.post(
        "/v1/embeddings",
        json={"model": "m", "input": ["a", "b"], "dimensions": 3, "user": "u-1"},
        headers={"x-lmforge-routing-key": "k1", "x-lmforge-deployment": "main"},
    )
    assert reply.status_code == 200, reply.text
    (request,) = engine.requests
    assert isinstance(request, EmbedRequest)
    assert (request.model, request.inputs, request.dimensions) == ("m", ("a", "b"), 3)
    assert request.routing == Routing("k1", "main") and request.caller is None
    body = reply.json()
    assert body["object"] == "list" and body["model"] == "m"
    assert [d["embedding"] for d in body["data"]] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 8, "total_tokens": 8}


async def test_base64_embeddings_are_little_endian_float32_of_the_same_vector(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    reply = await http.post(
        "/v1/embeddings", json={"model": "m", "input": "one text", "encoding_format": "base64"}
    )
    assert reply.status_code == 200, reply.text
    (item,) = reply.json()["data"]
    vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    assert vector.tolist() == [0.0, 1.0, 2.0]
    assert engine.requests[0].inputs == ("one text",)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": [1, 2, 3]}, "input"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
async def test_an_invalid_body_is_400_naming_the_field(
    http: httpx.AsyncClient, engine: FakeEngine, body: dict[str, Any], param: str
) -> None:
    reply = await http.post("/v1/embeddings", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_input"
    assert error["param"].startswith(param) and error["message"]
    assert engine.requests == []


async def test_a_body_that_is_not_json_is_400(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/embeddings", content=b"{not json")
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "body"


# -- completions -------------------------------------------------------------------------------
async def test_completion_passes_sampling_parameters_and_collects_the_text(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    reply = await http.post(
        "/v1/completions",
        json={"model": "m", "prompt": "Once", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9,
              "stop": "\n", "seed": 11, "logit_bias": {}},
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    (request,) = engine.requests
    assert isinstance(request, GenerateRequest) and request.prompt == "Once"
    params = request.params
    assert (params.max_new_tokens, params.temperature, params.top_p) == (7, 0.5, 0.9)
    assert (params.stop, params.seed, params.use_chat_template) == (("\n",), 11, False)
    body = reply.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [
        {"index": 0, "text": "hello", "finish_reason": "length", "logprobs": None}
    ]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


async def test_chat_completion_sends_the_whole_conversation(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    reply = await http.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "developer", "content": "be brief"},
                                         {"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "Hello!"},
                                         {"role": "user", "content": "Name a sea"}]},
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    (request,) = engine.requests
    assert isinstance(request, GenerateRequest) and request.prompt == ""
    assert request.params.messages == (
        ("system", "be brief"),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Name a sea"),
    )
    assert request.text == "be brief\nHi\nHello!\nName a sea"


async def test_chat_completion_wraps_the_user_message_in_the_chat_template(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    reply = await http.post(
        "/v1/chat/completions",
        json={"model": "m", "max_tokens": 3, "max_completion_tokens": 4, "stop": ["a", "b"],
              "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                        {"type": "text", "text": "there"}]}]},
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    (request,) = engine.requests
    assert isinstance(request, GenerateRequest) and request.params.messages == (
        ("user", "Hi there"),
    )
    assert request.params.use_chat_template and request.params.max_new_tokens == 4
    assert request.params.stop == ("a", "b") and request.params.temperature == 0.0
    body = reply.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert body["choices"][0]["finish_reason"] == "length"


async def test_streamed_chat_is_openai_chunks_with_usage_and_done(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post(
        "/v1/chat/completions",
        json={"model": "m", "stream": True, "stream_options": {"include_usage": True},
              "messages": [{"role": "user", "content": "Hi"}]},
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    data = events(reply)
    assert data[-1] == "[DONE]"
    chunks = data[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    texts = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert texts == ["hel", "lo"]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 3 + ["length"]
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


async def test_streamed_completion_without_usage_has_text_chunks_then_done(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post(
        "/v1/completions", json={"model": "m", "prompt": ["Once"], "stream": True}
    )
    data = events(reply)
    assert data[-1] == "[DONE]"
    chunks = data[:-1]
    assert [c["choices"][0]["text"] for c in chunks] == ["hel", "lo", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c and c["object"] == "text_completion" for c in chunks)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "42"},
                                               {"role": "user", "content": "Hi"}]},
         "messages.0.role"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "n": 2}, "n"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                  "tools": [{"type": "function"}]}, "tools"),
        ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
        ("/v1/completions", {"prompt": "a", "logprobs": 2}, "logprobs"),
    ],
)  # fmt: skip
async def test_what_the_engine_cannot_honour_is_refused_with_400(
    http: httpx.AsyncClient, engine: FakeEngine, path: str, body: dict[str, Any], param: str
) -> None:
    reply = await http.post(path, json={"model": "m", **body})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param
    assert engine.requests == []


async def test_a_refusal_before_the_first_chunk_is_a_status_not_a_stream(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.fail_with = Overloaded("streams full", retry_after=0.2)
    reply = await http.post("/v1/completions", json={"model": "m", "prompt": "x", "stream": True})
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "1" and reply.headers["retry-after-ms"] == "200"
    assert reply.json()["error"]["code"] == "overloaded"


class FailsMidStream(FakeEngine):
    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk("par", None, "", 5, 1, SERVED, 0.001)
        raise BackendUnavailable("triton went away")


async def test_an_error_after_the_first_chunk_is_an_error_event_ending_the_stream() -> None:
    transport = httpx.ASGITransport(app=make_app(FailsMidStream()).app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        reply = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
    data = events(reply)
    assert data[1]["choices"][0]["delta"] == {"content": "par"}
    assert data[-1]["error"]["code"] == "backend_unavailable" and "[DONE]" not in data


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidInput("bad"), 400, "invalid_request_error"),
        (ModelNotFound("no model 'x'"), 404, "invalid_request_error"),
        (Overloaded("busy", retry_after=1.5), 429, "rate_limit_error"),
        (BackendUnavailable("down"), 503, "service_unavailable_error"),
        (DeadlineExceeded("late"), 504, "timeout_error"),
        (BackendError("odd answer"), 500, "server_error"),
        (RuntimeError("secret detail"), 500, "server_error"),
    ],
)
async def test_each_engine_error_is_its_http_status_and_an_openai_error_object(
    http: httpx.AsyncClient,
    engine: FakeEngine,
    error: Exception,
    status: int,
    kind: str,
) -> None:
    engine.fail_with = error
    reply = await http.post("/v1/embeddings", json={"model": "m", "input": "x"})
    assert reply.status_code == status
    body = reply.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["type"] == kind
    assert "secret detail" not in body["message"]
    if status == 429:
        assert reply.headers["retry-after"] == "2" and reply.headers["retry-after-ms"] == "1500"
    else:
        assert "retry-after" not in reply.headers


async def test_an_unknown_path_is_a_404_error_object(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/images/generations", json={})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "404"


# -- models, predict, health -------------------------------------------------------------------
async def test_models_lists_the_engine_routes_as_openai_models(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.get("/v1/models")
    assert reply.status_code == 200
    (model,) = reply.json()["data"]
    assert (model["id"], model["object"], model["owned_by"]) == ("m", "model", "lmforge")
    assert model["task"] == "classify" and isinstance(model["created"], int)


async def test_predict_answers_in_the_shape_of_text_embeddings_inference(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    single = await http.post("/predict", json={"inputs": "great film"})
    batch = await http.post("/predict", json={"inputs": ["a", "b"], "model": "m"})
    assert single.json() == [{"label": "pos", "score": 0.75}, {"label": "neg", "score": 0.25}]
    assert batch.json() == [single.json(), single.json()]
    request = engine.requests[0]
    assert isinstance(request, ClassifyRequest)
    assert (request.model, request.inputs, request.top_k) == ("m", ("great film",), 0)


async def test_predict_without_a_model_needs_exactly_one_classifier() -> None:
    app = make_app(FakeEngine(), classifiers=("m", "m2"))
    transport = httpx.ASGITransport(app=app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        reply = await client.post("/predict", json={"inputs": "x"})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "model"


async def test_health_is_serving_when_the_engine_is_ready(http: httpx.AsyncClient) -> None:
    reply = await http.get("/health")
    assert reply.status_code == 200 and reply.json() == {"status": "SERVING"}


# -- API keys ----------------------------------------------------------------------------------
@pytest.fixture
async def keyed(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(engine, keys=True).app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic secret-a", "Bearer "])
async def test_a_missing_or_unknown_key_is_401(
    keyed: httpx.AsyncClient, engine: FakeEngine, header: str | None
) -> None:
    headers = {} if header is None else {"authorization": header}
    reply = await keyed.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers=headers)
    assert reply.status_code == 401
    assert reply.json()["error"]["type"] == "authentication_error"
    assert engine.requests == []


async def test_a_bad_body_without_a_key_is_401_not_400(keyed: httpx.AsyncClient) -> None:
    reply = await keyed.post("/v1/embeddings", content=b"nonsense")
    assert reply.status_code == 401


async def test_a_model_or_endpoint_outside_the_key_is_403(
    keyed: httpx.AsyncClient, engine: FakeEngine
) -> None:
    bob = {"authorization": "Bearer secret-b"}
    outside = await keyed.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers=bob)
    chat = await keyed.post(
        "/v1/chat/completions",
        json={"model": "other", "messages": [{"role": "user", "content": "x"}]},
        headers=bob,
    )
    listing = await keyed.get("/v1/models", headers=bob)
    assert [r.status_code for r in (outside, chat, listing)] == [403, 403, 403]
    assert outside.json()["error"]["type"] == "permission_error"
    assert engine.requests == []


async def test_a_key_inside_its_allow_list_is_the_engine_caller(
    keyed: httpx.AsyncClient, engine: FakeEngine
) -> None:
    reply = await keyed.post(
        "/predict", json={"inputs": "x"}, headers={"authorization": "Bearer secret-a"}
    )
    assert reply.status_code == 200, reply.text
    assert engine.requests[0].caller == "alice"  # type: ignore[attr-defined]


# -- the whole gateway -------------------------------------------------------------------------
async def test_the_gateway_serves_http_next_to_grpc_with_the_same_admission() -> None:
    """One engine behind both ports: a key's rate limit (one call, then 100 s to refill),
    spent over HTTP, refuses the next gRPC call and the next HTTP call (429, Retry-After)."""
    from lmforge_client.client import AsyncLmforgeClient, LmforgeError

    config = GatewayConfig.from_mapping(
        {
            "server": {"port": 0, "metrics_port": None, "http_port": 0},
            "triton": {"health_poll_interval_s": 0.05},
            "models": [{"name": "minilm", "task": "embed", "triton_model": "minilm"}],
            "auth": {"keys": [{"name": "k", "sha256": hash_key("s"), "rate_per_s": 0.01}]},
        }
    )
    call = {"json": {"model": "minilm", "input": "hello"}, "headers": {"authorization": "Bearer s"}}
    async with GatewayServer(config, FakeBackend()) as server:
        assert server.http_port is not None and server.http_port != server.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
            first = await client.post("/v1/embeddings", **call)  # type: ignore[arg-type]
            async with AsyncLmforgeClient(server.address, api_key="s", timeout=5.0) as grpc_client:
                with pytest.raises(LmforgeError) as refused:
                    await grpc_client.embed("minilm", ["hello"])
            again = await client.post("/v1/embeddings", **call)  # type: ignore[arg-type]
    assert first.status_code == 200, first.text
    assert len(first.json()["data"][0]["embedding"]) > 0
    assert refused.value.code.name == "RESOURCE_EXHAUSTED"
    assert again.status_code == 429, again.text
    assert int(again.headers["retry-after"]) >= 1
    assert "rate limit" in again.json()["error"]["message"]
