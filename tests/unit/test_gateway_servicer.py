"""The gRPC servicer against a fake engine: it only translates protobuf ↔ engine types and
engine errors → statuses (a real grpc.aio server on a free port, no backend, no router)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from lmforge_client._proto.lmforge.v1 import inference_service_pb2_grpc
from lmforge_client.client import AsyncLmforgeClient, LmforgeError
from lmforge_client.status import retry_delay

from gateway.engine_types import ClassifyRequest, EmbedRequest, GenerateRequest, Routing
from gateway.errors import ModelNotFound, Overloaded, to_status_proto
from gateway.metrics import GatewayMetrics
from gateway.service import InferenceServicer
from tests.fake_engine import FakeEngine


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeEngine, AsyncLmforgeClient]]:
    engine = FakeEngine()
    server = grpc.aio.server()
    servicer = InferenceServicer(engine, GatewayMetrics())
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = AsyncLmforgeClient(f"127.0.0.1:{port}", timeout=5.0)
    try:
        yield engine, client
    finally:
        await client.close()
        await server.stop(0)


async def test_embed_becomes_one_engine_request_and_its_result_the_response(
    served: tuple[FakeEngine, AsyncLmforgeClient],
) -> None:
    engine, client = served
    reply = await client.embed(
        "m", ["a", "b"], dimensions=3, truncation="none", routing_key="u1", deployment="main"
    )
    (request,) = engine.requests
    assert isinstance(request, EmbedRequest)
    assert (request.model, request.inputs, request.dimensions, request.truncate) == (
        "m", ("a", "b"), 3, False,
    )  # fmt: skip
    assert request.routing == Routing("u1", "main") and request.caller is None
    # the deadline the client set (5 s), as the server reads it: clocks may differ by ~10 ms
    assert request.timeout is not None and 0 < request.timeout <= 5.1
    assert reply.embeddings == ((0.0, 1.0, 2.0), (3.0, 4.0, 5.0)) and reply.dimensions == 3
    assert reply.input_tokens == (4, 4) and reply.usage.total_tokens == 8
    assert (reply.served_by.model, reply.served_by.triton_model) == ("m", "m_triton")
    assert reply.served_by.triton_model_version == "7"
    assert 0 < reply.timing.inference <= reply.timing.total  # capped at the time it took


async def test_classify_translates_pairs_top_k_and_per_input_answers(
    served: tuple[FakeEngine, AsyncLmforgeClient],
) -> None:
    engine, client = served
    reply = await client.classify("m", ["x", "y"], pairs=["p", "q"], top_k=1)
    (request,) = engine.requests
    assert isinstance(request, ClassifyRequest)
    assert (request.pairs, request.top_k, request.truncate) == (("p", "q"), 1, True)
    assert [[s.label for s in r.labels] for r in reply.results] == [["pos"], ["pos"]]
    assert reply.usage.input_tokens == 6


async def test_generate_collects_the_stream_and_generate_stream_relays_it(
    served: tuple[FakeEngine, AsyncLmforgeClient],
) -> None:
    engine, client = served
    reply = await client.generate("m", "prompt", max_new_tokens=2, seed=3)
    chunks = [c async for c in client.generate_stream("m", "prompt", max_new_tokens=2)]
    assert reply.text == "hello" and reply.finish_reason == "length"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (5, 2)
    assert [c.text for c in chunks] == ["hel", "lo"] and chunks[-1].finished
    first = engine.requests[0]
    assert isinstance(first, GenerateRequest)
    assert (first.prompt, first.params.max_new_tokens, first.params.seed) == ("prompt", 2, 3)


async def test_list_models_translates_model_and_deployment_descriptions(
    served: tuple[FakeEngine, AsyncLmforgeClient],
) -> None:
    _, client = served
    (model,) = await client.list_models()
    assert (model.name, model.task, model.labels, model.ready) == (
        "m", "classify", ("neg", "pos"), True,
    )  # fmt: skip
    (deployment,) = model.deployments
    assert (deployment.breaker, deployment.queued_inputs, deployment.gateway_tokenizes) == (
        "open", 3, True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ModelNotFound("no such model"), grpc.StatusCode.NOT_FOUND),
        (Overloaded("busy", retry_after=0.25), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (RuntimeError("secret detail"), grpc.StatusCode.INTERNAL),
    ],
)
async def test_engine_errors_become_their_status_codes(
    served: tuple[FakeEngine, AsyncLmforgeClient], error: Exception, code: grpc.StatusCode
) -> None:
    engine, client = served
    engine.fail_with = error
    for call in (client.embed("m", ["a"]), client.generate("m", "p")):
        with pytest.raises(LmforgeError) as info:
            await call
        assert info.value.code == code
        assert "secret detail" not in info.value.message
    if isinstance(error, Overloaded):
        assert retry_delay(to_status_proto(error)) == pytest.approx(0.25)


async def test_an_unknown_truncation_value_is_refused_before_the_engine(
    served: tuple[FakeEngine, AsyncLmforgeClient],
) -> None:
    engine, client = served
    with pytest.raises(LmforgeError) as info:
        await client.classify("m", ["a"], truncation=9)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["truncation"]
    assert engine.requests == []
