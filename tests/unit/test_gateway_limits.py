"""Request limits answered with a clear status naming the limit, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from lmforge_client.client import AsyncLmforgeClient, LmforgeError

from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from tests.eventually import eventually
from tests.fake_backend import FakeBackend

MODELS = [{"name": "sentiment", "task": "classify", "triton_model": "sentiment"}]


def limited(**sections: Any) -> GatewayConfig:
    data: dict[str, Any] = {
        "server": {"port": 0, "metrics_port": None},
        "triton": {"health_poll_interval_s": 0.05, "request_timeout_s": 5.0},
        "models": MODELS,
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return GatewayConfig.from_mapping(data)


@contextlib.asynccontextmanager
async def running(
    config: GatewayConfig, backend: FakeBackend | None = None
) -> AsyncIterator[tuple[GatewayServer, AsyncLmforgeClient]]:
    server = GatewayServer(config, backend or FakeBackend())
    await server.start()
    client = AsyncLmforgeClient(server.address, timeout=5.0)
    try:
        yield server, client
    finally:
        await client.close()
        await server.stop(grace=0, delay=0)


async def refusal(client: AsyncLmforgeClient, inputs: list[str]) -> LmforgeError:
    with pytest.raises(LmforgeError) as info:
        await client.classify("sentiment", inputs)
    return info.value


async def test_a_message_over_max_receive_message_bytes_is_resource_exhausted() -> None:
    cfg = limited(server={"max_receive_message_bytes": 4096}, limits={"max_chars_per_input": 9000})
    async with running(cfg) as (_, client):
        error = await refusal(client, ["x" * 5000])
        ok = await client.classify("sentiment", ["x" * 1000])
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4096" in error.message  # names the limit
    assert ok.results


async def test_inputs_chars_and_tokens_limits_are_invalid_argument_naming_the_limit() -> None:
    cfg = limited(
        limits={"max_inputs_per_request": 2, "max_chars_per_input": 50, "max_tokens_per_input": 5}
    )
    async with running(cfg) as (_, client):
        many = await refusal(client, ["a", "b", "c"])
        chars = await refusal(client, ["fine", "y" * 51])
        tokens = await refusal(client, ["one two three four five six"])
        fits = await client.classify("sentiment", ["one two three four five"])
    for error, field, limit in (
        (many, "inputs", "limits.max_inputs_per_request"),
        (chars, "inputs[1]", "limits.max_chars_per_input"),
        (tokens, "inputs[0]", "limits.max_tokens_per_input"),
    ):
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        (violation,) = error.violations
        assert violation.field == field and limit in violation.description, violation
    assert fits.results


async def test_shutdown_turns_health_first_then_drains_in_flight_calls() -> None:
    cfg = limited(server={"shutdown_delay_s": 0.3, "grace_period_s": 3.0})
    backend = FakeBackend(delay_s=0.6)
    server = GatewayServer(cfg, backend)
    await server.start()
    client = AsyncLmforgeClient(server.address, timeout=5.0)

    async def not_serving() -> bool:
        return await client.health() == "NOT_SERVING"

    try:
        await client.wait_for_health("SERVING", timeout=5)
        slow = asyncio.create_task(client.classify("sentiment", ["in flight"]))
        await eventually(lambda: len(backend.calls) == 1)
        stopping = asyncio.create_task(server.stop())
        await eventually(not_serving, timeout=0.25)  # well within shutdown_delay_s
        health_during_delay = await client.health()
        during_delay = await client.classify("sentiment", ["still answered"])  # 0.6 s < grace
        answered = await slow
        await eventually(stopping.done)  # the delay is over and the server stopped listening
        with pytest.raises(LmforgeError) as late:
            await client.classify("sentiment", ["too late"], timeout=1.0)
        await stopping
    finally:
        await client.close()
    assert health_during_delay == "NOT_SERVING"
    assert answered.results and during_delay.results
    assert late.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
