"""The whole gateway over a real grpc.aio server on a free port, with the fake backend."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status
from lmforge_client._proto.lmforge.v1 import classify_pb2, inference_service_pb2_grpc
from lmforge_client.client import AsyncLmforgeClient, LmforgeError
from lmforge_client.status import FieldViolation, field_violations

from gateway.config import GatewayConfig
from gateway.errors import BackendUnavailable
from gateway.server import GatewayServer
from tests.eventually import eventually
from tests.fake_backend import FakeBackend

CONFIG = {
    "server": {"port": 0, "metrics_port": None, "grace_period_s": 1.0},
    "triton": {"health_poll_interval_s": 0.05, "request_timeout_s": 5.0},
    "limits": {"max_inputs_per_request": 4, "max_chars_per_input": 200},
    "models": [
        {"name": "sentiment", "task": "classify", "triton_model": "sentiment"},
        {"name": "minilm", "task": "embed", "triton_model": "minilm", "version": 3},
        {"name": "ghost", "task": "embed", "triton_model": "not_in_backend"},
    ],
}


@dataclass
class Gateway:
    server: GatewayServer
    backend: FakeBackend
    client: AsyncLmforgeClient


@contextlib.asynccontextmanager
async def running_gateway(**server: object) -> AsyncIterator[Gateway]:
    backend = FakeBackend()
    config = GatewayConfig.from_mapping(CONFIG).with_overrides({"server": server})
    server_ = GatewayServer(config, backend)
    await server_.start()
    client = AsyncLmforgeClient(server_.address, timeout=5.0)
    try:
        yield Gateway(server_, backend, client)
    finally:
        await client.close()
        await server_.stop(grace=0)


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    async with running_gateway() as gateway:
        yield gateway


async def expect_error(call: Awaitable[object]) -> LmforgeError:
    with pytest.raises(LmforgeError) as info:
        await call
    return info.value


# -- Classify --------------------------------------------------------------------------------
async def test_classify_returns_all_labels_sorted_by_descending_score(gw: Gateway) -> None:
    reply = await gw.client.classify("sentiment", ["a positive day", "so negative"])
    assert len(reply.results) == 2
    for result in reply.results:
        scores = [s.score for s in result.labels]
        assert sorted(scores, reverse=True) == scores
        assert {s.label for s in result.labels} == {"negative", "neutral", "positive"}
        assert math.isclose(sum(scores), 1.0, rel_tol=1e-5)
    assert reply.results[0].top.label == "positive"
    assert reply.results[1].top.label == "negative"


async def test_classify_top_k_limits_labels_per_input(gw: Gateway) -> None:
    reply = await gw.client.classify("sentiment", ["positive", "neutral"], top_k=1)
    assert [[s.label for s in r.labels] for r in reply.results] == [["positive"], ["neutral"]]


async def test_classify_reports_served_by_usage_and_timing(gw: Gateway) -> None:
    reply = await gw.client.classify("sentiment", ["one two three", "four"])
    assert reply.served_by.model == "sentiment"
    assert reply.served_by.triton_model == "sentiment"
    assert reply.served_by.triton_model_version == "1"
    assert [r.input_tokens for r in reply.results] == [5, 3]
    assert reply.usage.input_tokens == 8 and reply.usage.total_tokens == 8
    assert 0 <= reply.timing.queue <= reply.timing.total
    assert 0 <= reply.timing.inference <= reply.timing.total


async def test_truncation_defaults_to_end_and_none_disables_it(gw: Gateway) -> None:
    await gw.client.classify("sentiment", ["x"], truncation="unspecified")
    await gw.client.classify("sentiment", ["x"], truncation="none")
    assert [call.truncate for call in gw.backend.calls] == [(True,), (False,)]


async def test_truncation_none_rejects_too_long_input_naming_it(gw: Gateway) -> None:
    long_text = " ".join(["word"] * 30)  # 32 fake tokens > max_length 16
    error = await expect_error(
        gw.client.classify("sentiment", ["ok", long_text], truncation="none")
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["inputs[1]"]
    reply = await gw.client.classify("sentiment", ["ok", long_text])
    assert reply.results[1].input_tokens == 16


# -- Embed -----------------------------------------------------------------------------------
async def test_embed_returns_one_unit_vector_per_input(gw: Gateway) -> None:
    reply = await gw.client.embed("minilm", ["a", "b", "c"])
    assert reply.dimensions == 8 and len(reply.embeddings) == 3
    for vector in reply.embeddings:
        assert len(vector) == 8
        assert math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-5)
    assert reply.served_by.triton_model_version == "1"
    again = await gw.client.embed("minilm", ["a"])
    assert again.embeddings[0] == reply.embeddings[0]


async def test_embed_dimensions_keeps_prefix_and_renormalizes(gw: Gateway) -> None:
    full = (await gw.client.embed("minilm", ["text"])).embeddings[0]
    short = await gw.client.embed("minilm", ["text"], dimensions=3)
    assert short.dimensions == 3
    norm = math.hypot(*full[:3])
    assert short.embeddings[0] == pytest.approx([v / norm for v in full[:3]], rel=1e-5)
    raw = await gw.client.embed("minilm", ["text"], dimensions=3, normalize=False)
    assert raw.embeddings[0] == pytest.approx(full[:3], rel=1e-6)


async def test_embed_rejects_dimensions_above_model_dimension(gw: Gateway) -> None:
    error = await expect_error(gw.client.embed("minilm", ["a"], dimensions=9))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["dimensions"]
    assert gw.backend.calls == []  # rejected before inference


async def test_embed_rejects_empty_string_with_field_violation(gw: Gateway) -> None:
    error = await expect_error(gw.client.embed("minilm", ["fine", ""]))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violations == (FieldViolation("inputs[1]", "is empty"),)


# -- invalid arguments -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("inputs", "kwargs", "field"),
    [
        ([], {}, "inputs"),
        (["a"] * 5, {}, "inputs"),
        (["a", "x" * 201], {}, "inputs[1]"),
        (["a"], {"truncation": 9}, "truncation"),
        (["a"], {"top_k": -1}, "top_k"),
    ],
    ids=["empty-list", "too-many", "too-long", "unknown-truncation", "negative-top-k"],
)
async def test_classify_rejects_bad_request_with_field_violation(
    gw: Gateway, inputs: list[str], kwargs: dict[str, Any], field: str
) -> None:
    error = await expect_error(gw.client.classify("sentiment", inputs, **kwargs))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [v.field for v in error.violations]


async def test_classify_on_an_embed_model_is_invalid_argument(gw: Gateway) -> None:
    error = await expect_error(gw.client.classify("minilm", ["a"]))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["model"]


async def test_bad_request_details_decode_with_rpc_status_from_call(gw: Gateway) -> None:
    async with grpc.aio.insecure_channel(gw.server.address) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Classify(classify_pb2.ClassifyRequest(model="sentiment", inputs=["", "a"]))
    status = rpc_status.from_call(info.value)
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in field_violations(status)] == ["inputs[0]"]


# -- other codes -----------------------------------------------------------------------------
async def test_unknown_model_is_not_found(gw: Gateway) -> None:
    error = await expect_error(gw.client.embed("nope", ["a"]))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "nope" in error.message


async def test_deadline_is_honoured_and_passed_to_backend(gw: Gateway) -> None:
    gw.backend.delay_s = 3.0
    started = time.monotonic()
    error = await expect_error(gw.client.embed("minilm", ["a"], timeout=0.3))
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5
    timeout = gw.backend.calls[0].timeout
    assert timeout is not None and 0 < timeout <= 0.3 + 0.02  # time_remaining() rounds


async def test_backend_unavailable_is_unavailable(gw: Gateway) -> None:
    gw.backend.fail_with = BackendUnavailable("triton is down")
    error = await expect_error(gw.client.classify("sentiment", ["a"]))
    assert error.code == grpc.StatusCode.UNAVAILABLE


async def test_unexpected_backend_error_is_internal_and_logged(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw.backend.fail_with = RuntimeError("boom")
    with caplog.at_level(logging.ERROR, logger="gateway.errors"):
        error = await expect_error(gw.client.classify("sentiment", ["a"]))
    assert error.code == grpc.StatusCode.INTERNAL
    assert "boom" not in error.message
    assert any(r.exc_info for r in caplog.records)


async def test_requests_beyond_concurrency_limit_are_resource_exhausted() -> None:
    config = GatewayConfig.from_mapping(CONFIG).with_overrides(
        {"server": {"max_concurrent_requests": 1}}
    )
    backend = FakeBackend(delay_s=0.5)
    async with GatewayServer(config, backend) as server:
        client = AsyncLmforgeClient(server.address)
        slow = asyncio.create_task(client.embed("minilm", ["a"]))
        await eventually(lambda: len(backend.calls) == 1)  # in flight, holding the only slot
        error = await expect_error(client.embed("minilm", ["b"]))
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len((await slow).embeddings) == 1
        await client.close()


# -- ListModels, health, reflection, metrics, shutdown ---------------------------------------
async def test_list_models_describes_each_logical_model(gw: Gateway) -> None:
    models = {m.name: m for m in await gw.client.list_models()}
    assert set(models) == {"sentiment", "minilm", "ghost"}
    sentiment, minilm, ghost = models["sentiment"], models["minilm"], models["ghost"]
    assert sentiment.task == "classify" and sentiment.ready
    assert sentiment.labels == ("negative", "neutral", "positive")
    assert sentiment.max_input_tokens == 16
    assert minilm.task == "embed" and minilm.dimension == 8
    assert minilm.triton_model_version == "3"
    assert not ghost.ready and ghost.triton_model == "not_in_backend"


async def test_health_goes_not_serving_when_backend_not_ready(gw: Gateway) -> None:
    gw.backend.models = {k: v for k, v in gw.backend.models.items()}
    gw.backend.models["not_in_backend"] = gw.backend.models["minilm"]  # all models present
    await gw.client.wait_for_health("SERVING", 2.0)
    assert await gw.client.health("lmforge.v1.InferenceService") == "SERVING"
    gw.backend.server_ready = False
    await gw.client.wait_for_health("NOT_SERVING", 2.0)
    assert await gw.client.health("lmforge.v1.InferenceService") == "NOT_SERVING"
    gw.backend.server_ready = True
    await gw.client.wait_for_health("SERVING", 2.0)
    gw.backend.not_ready_models.add("sentiment")
    await gw.client.wait_for_health("NOT_SERVING", 2.0)


async def test_health_turns_not_serving_when_a_configured_model_goes_missing(
    gw: Gateway,
) -> None:
    models = dict(gw.backend.models)
    gw.backend.models = {**models, "not_in_backend": models["minilm"]}
    await gw.client.wait_for_health("SERVING", 2.0)  # the poll loop runs: it saw "ghost" appear
    gw.backend.models = models  # "ghost" is gone from the backend again
    await gw.client.wait_for_health("NOT_SERVING", 2.0)


async def test_reflection_lists_inference_and_health_services(gw: Gateway) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(gw.server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names: set[str] = set()
        async for response in stub.ServerReflectionInfo(iter([request])):
            names.update(s.name for s in response.list_services_response.service)
    assert {"lmforge.v1.InferenceService", "grpc.health.v1.Health"} <= names


async def test_metrics_count_requests_by_rpc_model_and_code() -> None:
    async with running_gateway(metrics_port=0) as gw:
        await check_metrics(gw)


async def check_metrics(gw: Gateway) -> None:
    await gw.client.classify("sentiment", ["a", "b"])
    await expect_error(gw.client.classify("sentiment", [""]))
    url = f"http://127.0.0.1:{gw.server.metrics_port}/metrics"

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(fetch)
    assert 'lmforge_gateway_requests_total{code="OK",model="sentiment",rpc="Classify"} 1.0' in text
    assert 'code="INVALID_ARGUMENT",model="sentiment",rpc="Classify"} 1.0' in text
    assert 'lmforge_gateway_failures_total{kind="invalid_input",rpc="Classify"} 1.0' in text
    assert "lmforge_gateway_inputs_per_request_bucket" in text
    assert "lmforge_gateway_request_seconds_bucket" in text


async def test_stop_lets_in_flight_requests_finish_within_grace(gw: Gateway) -> None:
    gw.backend.delay_s = 0.3
    in_flight = asyncio.create_task(gw.client.embed("minilm", ["a"]))
    await eventually(lambda: len(gw.backend.calls) == 1)
    await gw.server.stop(grace=2.0)
    assert len((await in_flight).embeddings) == 1
    assert gw.backend.closed
