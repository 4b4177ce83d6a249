"""The Triton adapter and the gateway against a real tritonserver serving tests/fixtures/tiny_repo."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from lmforge_client.client import AsyncLmforgeClient, LmforgeError

from gateway.backend import ModelTarget
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from gateway.triton_backend import TritonBackend
from triton_host.launcher import TritonServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_repo"
EMBED = {"name": "tiny-embed", "task": "embed", "triton_model": "tiny_embed"}
SENTIMENT = {"name": "tiny-sentiment", "task": "classify", "triton_model": "tiny_classify"}
MISSING = {"name": "missing", "task": "embed", "triton_model": "no_such_model"}


def start_triton() -> TritonServer:
    server = TritonServer(REPO)
    server.start()
    try:
        server.wait_ready(timeout=120)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def triton() -> Iterator[Any]:
    server = start_triton()
    yield server
    server.stop()


def config_for(url: str, *models: dict[str, str]) -> GatewayConfig:
    return GatewayConfig.from_mapping(
        {
            "server": {"port": 0, "metrics_port": None},
            "triton": {"url": url, "health_poll_interval_s": 0.2, "connect_timeout_s": 1.0},
            "limits": {"max_inputs_per_request": 16},
            "models": list(models),
        }
    )


@dataclass
class Gateway:
    server: GatewayServer
    client: AsyncLmforgeClient


@pytest.fixture
async def gw(triton: Any) -> AsyncIterator[Gateway]:
    config = config_for(triton.grpc_url, EMBED, SENTIMENT, MISSING)
    async with GatewayServer(config) as server:
        client = AsyncLmforgeClient(server.address, timeout=20)
        yield Gateway(server, client)
        await client.close()


async def test_adapter_reads_contract_parameters_from_model_config(triton: Any) -> None:
    backend = TritonBackend(triton.grpc_url)
    try:
        sentiment = await backend.model_info(ModelTarget("s", "classify", "tiny_classify"))
        embed = await backend.model_info(ModelTarget("e", "embed", "tiny_embed"))
        assert await backend.ready() and await backend.ready(
            ModelTarget("e", "embed", "tiny_embed")
        )
    finally:
        await backend.close()
    assert sentiment.labels == ("negative", "positive") and sentiment.max_length == 8
    assert embed.dimension == 16 and embed.max_length == 8


async def test_embed_keeps_input_order_across_max_batch_size_chunks(gw: Gateway) -> None:
    texts = [f"sentence number {i}" for i in range(6)]  # max_batch_size 4 -> 2 requests
    reply = await gw.client.embed("tiny-embed", texts)
    assert reply.dimensions == 16 and len(reply.embeddings) == 6
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in reply.embeddings)
    single = await gw.client.embed("tiny-embed", [texts[5]])
    assert single.embeddings[0] == pytest.approx(reply.embeddings[5], rel=1e-6)
    assert reply.input_tokens == (5,) * 6 and reply.usage.input_tokens == 30
    assert reply.served_by.triton_model == "tiny_embed"
    assert reply.served_by.triton_model_version == "1"
    short = await gw.client.embed("tiny-embed", texts[:2], dimensions=4)
    assert short.dimensions == 4 and len(short.embeddings[1]) == 4


async def test_classify_returns_contract_labels_sorted(gw: Gateway) -> None:
    reply = await gw.client.classify("tiny-sentiment", ["a good film", "a dull film"], top_k=1)
    assert [r.top.label for r in reply.results] == ["positive", "negative"]
    full = await gw.client.classify("tiny-sentiment", ["good"])
    assert [s.label for s in full.results[0].labels] == ["positive", "negative"]


def _requests_seen(triton: TritonServer, model: str) -> int:
    """Requests Triton executed for ``model``, successful or failed."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        stats = client.get_inference_statistics(model).model_stats[0].inference_stats
    return int(stats.success.count) + int(stats.fail.count)


async def test_input_too_long_becomes_invalid_argument_naming_each_input(
    gw: Gateway, triton: TritonServer
) -> None:
    long_a, long_b = "w " * 9, "v " * 12  # 11 and 14 tokens > 8
    texts = ["short", long_a, "ok", "fine", long_b]  # chunks [0..3], [4]
    before = _requests_seen(triton, "tiny_classify")
    with pytest.raises(LmforgeError) as info:
        await gw.client.classify("tiny-sentiment", texts, truncation="none")
    # the model's error names every too-long row: nothing is re-sent to find them (the
    # batcher sent the three short inputs and the two long ones as two batches)
    assert _requests_seen(triton, "tiny_classify") - before == 2
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["inputs[1]", "inputs[4]"]
    assert "INPUT_TOO_LONG" in info.value.violations[0].description
    reply = await gw.client.classify("tiny-sentiment", texts)  # default: truncate at the end
    assert [r.input_tokens for r in reply.results] == [3, 8, 3, 3, 8]


async def test_unknown_triton_model_is_not_found(gw: Gateway) -> None:
    with pytest.raises(LmforgeError) as info:
        await gw.client.embed("missing", ["a"])
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    models = {m.name: m for m in await gw.client.list_models()}
    assert models["tiny-embed"].ready and models["tiny-embed"].dimension == 16
    assert models["tiny-sentiment"].labels == ("negative", "positive")
    assert not models["missing"].ready


async def test_stopping_triton_fails_calls_fast_and_turns_health_not_serving() -> None:
    triton = start_triton()
    try:
        config = config_for(triton.grpc_url, EMBED, SENTIMENT)
        async with GatewayServer(config) as server:
            client = AsyncLmforgeClient(server.address, timeout=10)
            await client.wait_for_health("SERVING", 5)
            await client.embed("tiny-embed", ["warm"])

            await asyncio.to_thread(triton.stop)
            started = time.monotonic()
            with pytest.raises(LmforgeError) as info:
                await client.embed("tiny-embed", ["a"])
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 2.0
            await client.wait_for_health("NOT_SERVING", 2.0 - (time.monotonic() - started))
            await client.close()
    finally:
        triton.stop()
