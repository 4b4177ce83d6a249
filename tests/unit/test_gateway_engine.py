"""The engine against the fake backend: no gRPC. Description, the one fallback loop for
streams, and queue-time admission on by default."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from gateway.backend import Backend, ModelMetadata
from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.engine_types import EmbedRequest, GenerateRequest
from gateway.errors import Overloaded
from gateway.metrics import GatewayMetrics
from tests.eventually import eventually
from tests.fake_backend import FakeBackend

LABELS = ("negative", "neutral", "positive")


def fake(**knobs: Any) -> FakeBackend:
    models = {
        "small": ModelMetadata(task="classify", labels=LABELS, max_length=32),
        "large": ModelMetadata(task="classify", labels=LABELS, max_length=32),
        "minilm": ModelMetadata(task="embed", dimension=8, max_length=32),
        "tinylm": ModelMetadata(task="generate", max_length=16, max_new_tokens=64),
    }
    return FakeBackend(models=models, **knobs)


def config(models: list[dict[str, Any]], **sections: Any) -> GatewayConfig:
    return GatewayConfig.from_mapping(
        {"endpoints": {"b": {"url": "b:8001"}}, "models": models, **sections}
    )


async def engine_over(
    cfg: GatewayConfig, backends: Mapping[str, FakeBackend]
) -> AsyncIterator[tuple[Engine, GatewayMetrics]]:
    metrics = GatewayMetrics()

    def factory(endpoint: str, _config: GatewayConfig) -> Backend:
        return backends[endpoint]

    engine = Engine(cfg, factory, metrics)
    try:
        yield engine, metrics
    finally:
        await engine.close()


async def test_models_report_breaker_split_weight_shadow_and_readiness_per_deployment() -> None:
    route = {
        "name": "c",
        "task": "classify",
        "deployments": [
            {"name": "a", "triton_model": "small"},
            {"name": "b", "triton_model": "large", "endpoint": "b"},
            {"name": "s", "triton_model": "missing"},
        ],
        "split": {"a": 3, "b": 1},
        "shadow": {"deployment": "s", "share": 0.1},
        "breaker": {"failures": 1, "open_seconds": 60},
    }
    embed = {"name": "e", "task": "embed", "triton_model": "minilm"}
    down = fake(fail_with=Overloaded("never asked"))
    down.not_ready_models.add("large")
    async for engine, _ in engine_over(config([route, embed]), {"default": fake(), "b": down}):
        first, second = await engine.models()
    assert (first.name, first.task, first.routing, second.name, second.task) == (
        "c", "classify", "split,shadow", "e", "embed",
    )  # fmt: skip
    assert [(d.name, d.breaker, d.split_weight, d.shadow, d.ready) for d in first.deployments] == [
        ("a", "closed", 3.0, False, True),
        ("b", "closed", 1.0, False, False),
        ("s", "closed", 0.0, True, False),
    ]
    assert first.labels == LABELS and first.max_input_tokens == 32 and first.ready
    assert second.dimension == 8 and second.routing == "single"


async def test_a_busy_generate_deployment_hands_over_before_output_like_any_call() -> None:
    route = {
        "name": "g",
        "task": "generate",
        "deployments": [
            {"name": "a", "triton_model": "tinylm", "endpoint": "b"},
            {"name": "b", "triton_model": "tinylm"},
        ],
    }
    busy = fake(max_generations=0)  # refuses every generation: Overloaded, no output
    async for engine, metrics in engine_over(config([route]), {"default": fake(), "b": busy}):
        chunks = [c async for c in engine.generate(GenerateRequest("g", "a prompt"))]
        fallbacks = metrics.registry.get_sample_value(
            "lmforge_gateway_fallbacks_total", {"route": "g", "deployment": "a"}
        )
    assert {c.served_by.deployment for c in chunks} == {"b"}
    assert chunks[-1].finish_reason is not None and fallbacks == 1.0


EMBED = {"name": "e", "task": "embed", "triton_model": "minilm"}
QUEUE = {"max_batch_size": 2, "max_in_flight_batches": 1, "max_wait_ms": 0}


async def _fill_queue(engine: Engine, backend: FakeBackend) -> list[asyncio.Task[Any]]:
    """Learn the cost per input (one unloaded call), then one batch running and four queued
    (the derived budget is four full batches)."""
    await engine.embed(EmbedRequest("e", ("warm up",)))
    running = asyncio.create_task(engine.embed(EmbedRequest("e", ("running",))))
    await eventually(lambda: len(backend.calls) == 2)
    queued = asyncio.create_task(engine.embed(EmbedRequest("e", tuple(f"q{i}" for i in range(8)))))

    async def four_batches_queued() -> bool:
        (model,) = await engine.models()
        return model.deployments[0].queued_inputs == 8

    await eventually(four_batches_queued)
    return [running, queued]


async def test_by_default_a_request_predicted_to_wait_past_a_full_batch_is_refused() -> None:
    backend = fake(delay_s=0.05)
    async for engine, _ in engine_over(
        config([EMBED], batching=QUEUE), {"default": backend, "b": fake()}
    ):
        admitted = await _fill_queue(engine, backend)
        with pytest.raises(Overloaded, match=r"queue budget .* time of a full batch") as info:
            await engine.embed(EmbedRequest("e", ("one too many",)))
        assert info.value.retry_after is not None and info.value.retry_after > 0
        assert all(len(r.vectors) for r in await asyncio.gather(*admitted))


async def test_an_explicit_max_queue_ms_overrides_the_derived_budget() -> None:
    backend = fake(delay_s=0.05)
    batching = {**QUEUE, "max_queue_ms": 10_000}
    async for engine, _ in engine_over(
        config([EMBED], batching=batching), {"default": backend, "b": fake()}
    ):
        admitted = await _fill_queue(engine, backend)
        late = await engine.embed(EmbedRequest("e", ("one too many",)))
        assert len(late.vectors) == 1
        await asyncio.gather(*admitted)
