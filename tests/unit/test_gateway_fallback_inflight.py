"""Fallback of work already handed to a deployment that dies: the batch in flight on it and
the inputs queued behind it in its batcher are answered by the next deployment (what
``lmforge bench fallback`` drills on real Triton, here with fake backends)."""

from __future__ import annotations

import asyncio

from gateway.errors import BackendUnavailable
from tests.eventually import eventually
from tests.fake_backend import FakeBackend
from tests.unit.test_gateway_routing_service import config, fake, gateway

ROUTE = {
    "name": "e",
    "task": "embed",
    "deployments": [
        {"name": "a", "triton_model": "minilm"},
        {"name": "b", "triton_model": "minilm", "endpoint": "b"},
    ],
    "batching": {"max_batch_size": 2, "max_in_flight_batches": 1},
}
#: what tritonclient reports for a call in flight when its Triton is SIGKILLed
SOCKET_CLOSED = BackendUnavailable(
    "Triton at a:8001 is unavailable: Stream removed (Socket closed)"
)


async def first_batch_sent(backend: FakeBackend) -> None:
    """Until ``backend`` has been called (its ``delay_s`` keeps that batch in flight)."""
    await eventually(lambda: bool(backend.calls), interval=0.005)


async def test_a_batch_in_flight_on_a_dying_deployment_is_answered_by_the_next_one() -> None:
    dying, spare = fake(delay_s=0.3), fake()
    async with gateway(config([ROUTE]), {"default": dying, "b": spare}) as gw:
        texts = [f"sentence {i}" for i in range(4)]
        replies = asyncio.gather(*(gw.client.embed("e", [t]) for t in texts))
        await first_batch_sent(dying)  # in flight on "a"; the others queue behind it
        in_flight = [call.inputs for call in dying.calls]
        dying.fail_with = SOCKET_CLOSED  # the batch in flight fails when it returns
        answered = await replies
        fallbacks = gw.server.metrics.registry.get_sample_value(
            "lmforge_gateway_fallbacks_total", {"route": "e", "deployment": "a"}
        )
    assert len(in_flight) == 1 and len(in_flight[0]) < len(texts), in_flight
    assert len(answered) == 4 and all(len(r.embeddings) == 1 for r in answered)
    assert sorted(i for call in spare.calls for i in call.inputs) == texts
    assert fallbacks == 4  # every caller of "a", in flight or queued, went on to "b"


async def test_the_breaker_opens_on_in_flight_failures_and_new_requests_skip_the_dead() -> None:
    dying, spare = fake(delay_s=0.3), fake()
    route = {**ROUTE, "breaker": {"failures": 2, "open_seconds": 30}}
    async with gateway(config([route]), {"default": dying, "b": spare}) as gw:
        first = asyncio.gather(*(gw.client.embed("e", [f"early {i}"]) for i in range(4)))
        await first_batch_sent(dying)
        dying.fail_with = SOCKET_CLOSED
        await first
        tried = len(dying.calls)
        later = [await gw.client.embed("e", [f"late {i}"]) for i in range(5)]
        models = {m.name: m for m in await gw.client.list_models()}
    assert len(later) == 5 and len(dying.calls) == tried  # nothing more sent to the dead one
    assert {d.name: d.breaker for d in models["e"].deployments} == {"a": "open", "b": "closed"}
