"""Generate and GenerateStream through the whole gateway (grpc.aio on a free port) with the
fake backend, plus the pure pieces of the Triton path (error translation, response parsing)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from lmforge_client.client import AsyncLmforgeClient, LmforgeError

from gateway.backend import Backend, GenerationParams, ModelMetadata
from gateway.config import GatewayConfig
from gateway.errors import BackendUnavailable, InvalidInput, Overloaded
from gateway.server import GatewayServer
from gateway.triton_errors import translate_generation
from gateway.triton_generate import parse_response
from tests.eventually import eventually
from tests.fake_backend import FakeBackend, fake_completion
from triton_models.runtime import contract

TINY = ModelMetadata(task="generate", max_length=16, max_new_tokens=64, chat_template=True)
MODELS = {
    "tinylm": TINY,
    "basiclm": ModelMetadata(task="generate", max_length=16, max_new_tokens=64),
    "sentiment": ModelMetadata(task="classify", labels=("negative", "positive"), max_length=16),
}
ROUTES = [
    {"name": "tiny", "task": "generate", "triton_model": "tinylm"},
    {"name": "basic", "task": "generate", "triton_model": "basiclm"},
    {"name": "sentiment", "task": "classify", "triton_model": "sentiment"},
    {
        "name": "fallback",
        "task": "generate",
        "deployments": [
            {"name": "a", "triton_model": "tinylm", "endpoint": "b"},
            {"name": "b", "triton_model": "tinylm"},
        ],
    },
]
PROMPT = "the quick brown fox"


@dataclass
class Gateway:
    server: GatewayServer
    backends: dict[str, FakeBackend]
    client: AsyncLmforgeClient

    @property
    def backend(self) -> FakeBackend:
        return self.backends["default"]


@contextlib.asynccontextmanager
async def running(**server: Any) -> AsyncIterator[Gateway]:
    config = GatewayConfig.from_mapping(
        {
            "server": {"port": 0, "metrics_port": None, "grace_period_s": 0.5, **server},
            "triton": {"health_poll_interval_s": 0.05, "request_timeout_s": 5.0},
            "endpoints": {"b": {"url": "b:8001"}},
            "limits": {"max_prompt_chars": 200, "max_new_tokens": 100, "max_stop_sequences": 2},
            "models": ROUTES,
        }
    )
    fakes = {"default": FakeBackend(models=dict(MODELS)), "b": FakeBackend(models=dict(MODELS))}

    def factory(endpoint: str, _config: GatewayConfig) -> Backend:
        return fakes[endpoint]

    gateway = GatewayServer(config, backend_factory=factory)
    await gateway.start()
    client = AsyncLmforgeClient(gateway.address, timeout=5.0)
    try:
        yield Gateway(gateway, fakes, client)
    finally:
        await client.close()
        await gateway.stop(grace=0)


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    async with running() as gateway:
        yield gateway


async def expect_error(call: Awaitable[object]) -> LmforgeError:
    with pytest.raises(LmforgeError) as info:
        await call
    return info.value


async def collect(gw: Gateway, model: str, prompt: str, **options: Any) -> list[Any]:
    return [chunk async for chunk in gw.client.generate_stream(model, prompt, **options)]


def expected_text(prompt: str, **params: Any) -> str:
    return "".join(fake_completion(prompt, GenerationParams(**params), TINY))


# -- results -----------------------------------------------------------------------------------
async def test_generate_returns_the_completion_with_finish_reason_usage_and_timing(
    gw: Gateway,
) -> None:
    reply = await gw.client.generate("tiny", PROMPT, max_new_tokens=6)
    assert reply.text == expected_text(PROMPT, max_new_tokens=6)
    assert reply.finish_reason == "length" and reply.stop_sequence == ""
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (6, 6)
    assert reply.usage.total_tokens == 12
    assert reply.served_by.model == "tiny" and reply.served_by.triton_model == "tinylm"
    assert reply.served_by.triton_model_version == "1"
    assert 0 <= reply.timing.inference <= reply.timing.total


@pytest.mark.parametrize(
    "options",
    [{"max_new_tokens": 9}, {"max_new_tokens": 9, "temperature": 0.7, "seed": 11}],
    ids=["greedy", "seeded"],
)
async def test_streamed_chunks_add_up_to_the_unary_result(
    gw: Gateway, options: dict[str, Any]
) -> None:
    chunks = await collect(gw, "tiny", PROMPT, **options)
    reply = await gw.client.generate("tiny", PROMPT, **options)
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == reply.text
    assert [c.finished for c in chunks] == [False] * (len(chunks) - 1) + [True]
    last = chunks[-1]
    assert last.finish_reason == reply.finish_reason and last.usage == reply.usage
    assert all(c.usage is None for c in chunks[:-1])


async def test_a_stop_string_never_appears_and_is_reported(gw: Gateway) -> None:
    full = expected_text(PROMPT, max_new_tokens=20)
    stop = full.split(" ")[5]  # the 5th word: " w<n>" minus its space
    for text in (
        (await gw.client.generate("tiny", PROMPT, max_new_tokens=20, stop=[stop])).text,
        "".join(c.text for c in await collect(gw, "tiny", PROMPT, max_new_tokens=20, stop=[stop])),
    ):
        assert stop not in text
        assert text == full[: full.index(stop)]
    reply = await gw.client.generate("tiny", PROMPT, max_new_tokens=20, stop=["zz", stop])
    assert (reply.finish_reason, reply.stop_sequence) == ("stop_sequence", stop)


async def test_max_new_tokens_bounds_the_output_and_eos_ends_early(gw: Gateway) -> None:
    reply = await gw.client.generate("tiny", PROMPT, max_new_tokens=4)
    assert reply.usage.output_tokens == 4 and reply.finish_reason == "length"
    assert len(reply.text.split()) == 4
    early = await gw.client.generate("tiny", "stop soon <eos:3>", max_new_tokens=10)
    assert early.finish_reason == "end_of_sequence" and early.usage.output_tokens == 3


async def test_parameters_reach_the_backend(gw: Gateway) -> None:
    await gw.client.generate(
        "tiny",
        PROMPT,
        max_new_tokens=5,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        repetition_penalty=1.2,
        stop=["x"],
        seed=7,
        use_chat_template=True,
        truncation="none",
    )
    params = gw.backend.generations[-1]
    assert params == GenerationParams(
        5, 0.5, pytest.approx(0.9), 40, ("x",), 7, pytest.approx(1.2), True
    )
    assert gw.backend.calls[-1].truncate == (False,)


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "prompt", "options", "field"),
    [
        ("tiny", "", {}, "prompt"),
        ("tiny", "x" * 201, {}, "prompt"),
        ("tiny", PROMPT, {"temperature": -1.0}, "parameters.temperature"),
        ("tiny", PROMPT, {"top_p": 2.0}, "parameters.top_p"),
        ("tiny", PROMPT, {"max_new_tokens": 101}, "parameters.max_new_tokens"),
        ("tiny", PROMPT, {"max_new_tokens": 65}, "parameters.max_new_tokens"),  # model limit
        ("tiny", PROMPT, {"stop": ["a", "b", "c"]}, "parameters.stop"),
        ("tiny", PROMPT, {"stop": ["a", ""]}, "parameters.stop[1]"),
        ("tiny", " ".join(["w"] * 30), {"truncation": "none"}, "prompt"),
        ("basic", PROMPT, {"use_chat_template": True}, "use_chat_template"),
        ("sentiment", PROMPT, {}, "model"),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    gw: Gateway, model: str, prompt: str, options: dict[str, Any], field: str
) -> None:
    for call in (
        gw.client.generate(model, prompt, **options),
        collect(gw, model, prompt, **options),
    ):
        error = await expect_error(call)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in [v.field for v in error.violations], error


async def test_unknown_model_is_not_found(gw: Gateway) -> None:
    assert (
        await expect_error(gw.client.generate("nope", PROMPT))
    ).code == grpc.StatusCode.NOT_FOUND


async def test_a_full_model_is_resource_exhausted_at_once(gw: Gateway) -> None:
    gw.backend.max_generations, gw.backend.token_delay_s = 1, 0.05
    running = asyncio.create_task(gw.client.generate("tiny", PROMPT, max_new_tokens=10))
    await eventually(lambda: gw.backend.active_generations == 1)
    started = time.monotonic()
    error = await expect_error(gw.client.generate("tiny", PROMPT, max_new_tokens=10))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - started < 0.3  # refused, not queued
    assert (await running).usage.output_tokens == 10


async def test_an_error_after_the_first_chunk_ends_the_stream_with_its_status(
    gw: Gateway,
) -> None:
    gw.backend.fail_after_chunks, gw.backend.fail_with = 2, Overloaded("gone busy")
    received = []
    with pytest.raises(LmforgeError) as info:
        async for chunk in gw.client.generate_stream("tiny", PROMPT, max_new_tokens=10):
            received.append(chunk)
    assert len(received) == 2 and not any(c.finished for c in received)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "gone busy" in info.value.message


async def test_cancelling_a_stream_stops_the_generation_in_the_backend(gw: Gateway) -> None:
    gw.backend.token_delay_s = 0.05
    stream = gw.client.generate_stream("tiny", PROMPT, max_new_tokens=60)
    async for _chunk in stream:
        break  # the caller has seen enough
    await stream.aclose()  # type: ignore[attr-defined]
    await eventually(lambda: gw.backend.active_generations == 0, timeout=1.0)


async def test_a_passed_deadline_is_deadline_exceeded_and_stops_generating(gw: Gateway) -> None:
    gw.backend.token_delay_s = 0.1
    started = time.monotonic()
    error = await expect_error(gw.client.generate("tiny", PROMPT, max_new_tokens=60, timeout=0.4))
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5
    await eventually(lambda: gw.backend.active_generations == 0, timeout=1.0)


async def test_an_unavailable_deployment_hands_over_before_the_first_chunk(gw: Gateway) -> None:
    gw.backends["b"].not_ready_models.add("tinylm")
    reply = await gw.client.generate("fallback", PROMPT, max_new_tokens=3)
    assert reply.served_by.triton_model == "tinylm"
    assert [c.method for c in gw.backends["default"].calls] == ["generate"]
    gw.backend.fail_after_chunks, gw.backend.fail_with = 1, BackendUnavailable("gone")
    error = await expect_error(collect(gw, "fallback", PROMPT, max_new_tokens=5))
    assert error.code == grpc.StatusCode.UNAVAILABLE  # after a chunk: no second try


async def test_generation_metrics_are_exported() -> None:
    async with running(metrics_port=0) as gw:
        await gw.client.generate("tiny", PROMPT, max_new_tokens=5)
        await collect(gw, "tiny", PROMPT, max_new_tokens=5)
        url = f"http://127.0.0.1:{gw.server.metrics_port}/metrics"
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )
    assert 'lmforge_gateway_generated_tokens_total{model="tiny"} 10.0' in text
    assert (
        'lmforge_gateway_generate_first_token_seconds_count{model="tiny",rpc="GenerateStream"} 1.0'
        in text
    )
    assert 'lmforge_gateway_generate_tokens_per_second_count{model="tiny"} 2.0' in text
    assert 'lmforge_gateway_generate_active_streams{model="tiny"} 0.0' in text
    assert 'code="OK",model="tiny",rpc="GenerateStream"} 1.0' in text


async def test_list_models_shows_the_generate_model(gw: Gateway) -> None:
    models = {m.name: m for m in await gw.client.list_models()}
    assert models["tiny"].task == "generate" and models["tiny"].ready
    assert models["tiny"].max_input_tokens == 16


# -- the Triton path's pure pieces ------------------------------------------------------------
@pytest.mark.parametrize(
    ("message", "kind", "field"),
    [
        (contract.capacity_message("8 sequences"), Overloaded, None),
        (
            "in model 'x': " + contract.invalid_parameter_message("TOP_P", "must be <= 1"),
            InvalidInput,
            "parameters.top_p",
        ),
        (contract.input_too_long_message({0: 2000}, 1024), InvalidInput, "prompt"),
        ("Request for unknown model: 'x' is not found", None, None),
    ],
)
def test_generate_model_errors_translate_to_gateway_errors(
    message: str, kind: type[Exception] | None, field: str | None
) -> None:
    error = translate_generation(None, message, url="t:1", model="x")
    if kind is not None:
        assert isinstance(error, kind)
    else:
        assert error.grpc_code == grpc.StatusCode.NOT_FOUND
    if field is not None:
        assert isinstance(error, InvalidInput) and error.violations[0].field == field


class _Result:
    def __init__(self, **values: Any) -> None:
        self.values = values

    def as_numpy(self, name: str) -> np.ndarray[Any, Any] | None:
        return self.values.get(name)

    def get_response(self) -> Any:
        return type("Response", (), {"model_version": "3"})()


def test_generate_model_responses_parse_into_chunks() -> None:
    def s(v: str) -> np.ndarray[Any, Any]:
        return np.array([v.encode()], dtype=np.object_)

    def i(v: int) -> np.ndarray[Any, Any]:
        return np.array([v], dtype=np.int32)

    result = _Result(
        **{
            contract.OUTPUT_TEXT: s("héllo"),
            contract.OUTPUT_FINISH_REASON: s(""),
            contract.OUTPUT_STOP_SEQUENCE: s(""),
            contract.OUTPUT_INPUT_TOKENS: i(4),
            contract.OUTPUT_OUTPUT_TOKENS: i(2),
        }
    )
    chunk = parse_response(result)
    assert (chunk.text, chunk.finish_reason, chunk.output_tokens, chunk.version) == (
        "héllo",
        None,
        2,
        "3",
    )
    result.values[contract.OUTPUT_FINISH_REASON] = s("stop_sequence")
    result.values[contract.OUTPUT_STOP_SEQUENCE] = s("\n")
    last = parse_response(result)
    assert (last.finish_reason, last.stop_sequence) == ("stop_sequence", "\n")
