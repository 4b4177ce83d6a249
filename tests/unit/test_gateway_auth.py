"""API keys, per-key allow-lists and quotas, public health, key rotation by reload."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lmforge_client._proto.lmforge.v1 import classify_pb2, inference_service_pb2_grpc
from lmforge_client.client import AsyncLmforgeClient, LmforgeError
from lmforge_client.status import retry_delay

from gateway.admission import Admission, AdmissionPolicy, TokenBucket
from gateway.auth import AccessInterceptor, AccessPolicy, hash_key
from gateway.config import ConfigError, GatewayConfig
from gateway.errors import Overloaded, PermissionDenied, Unauthenticated
from gateway.server import GatewayServer
from tests.eventually import eventually
from tests.fake_backend import FakeBackend

MODELS = [
    {"name": "sentiment", "task": "classify", "triton_model": "sentiment"},
    {"name": "minilm", "task": "embed", "triton_model": "minilm"},
]
SEARCH, ADMIN = "search-secret", "admin-secret"


def key(name: str, secret: str, **rules: Any) -> dict[str, Any]:
    return {"name": name, "sha256": hash_key(secret), **rules}


def auth_config(keys: list[dict[str, Any]], **auth: Any) -> GatewayConfig:
    return GatewayConfig.from_mapping(
        {
            "server": {"port": 0, "metrics_port": None},
            "triton": {"health_poll_interval_s": 0.05, "request_timeout_s": 5.0},
            "models": MODELS,
            "auth": {"keys": keys, **auth},
        }
    )


DEFAULT_KEYS = [
    key("search", SEARCH, models=["minilm"], rpcs=["Embed", "ListModels"]),
    key("admin", ADMIN),
]


@contextlib.asynccontextmanager
async def running(
    config: GatewayConfig, backend: FakeBackend | None = None
) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(config, backend or FakeBackend())
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0, delay=0)


async def code_of(target: str, api_key: str | None, call: str = "classify") -> grpc.StatusCode:
    async with AsyncLmforgeClient(target, timeout=3.0, api_key=api_key) as client:
        try:
            if call == "classify":
                await client.classify("sentiment", ["fine"])
            elif call == "embed":
                await client.embed("minilm", ["fine"])
            else:
                await client.list_models()
        except LmforgeError as exc:
            return exc.code
    return grpc.StatusCode.OK


async def raw_classify(target: str, metadata: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        request = classify_pb2.ClassifyRequest(model="sentiment", inputs=["x"])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Classify(request, metadata=metadata, timeout=3.0)
    return info.value


def status_detail(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for k, v in error.trailing_metadata() or ():
        if k == "grpc-status-details-bin":
            return status_pb2.Status.FromString(v)
    raise AssertionError("no google.rpc.Status in the trailers")


async def test_calls_without_a_valid_key_are_unauthenticated() -> None:
    async with running(auth_config(DEFAULT_KEYS)) as gw:
        assert await code_of(gw.address, None) == grpc.StatusCode.UNAUTHENTICATED
        assert await code_of(gw.address, "guess") == grpc.StatusCode.UNAUTHENTICATED
        for metadata in (
            (("authorization", f"Basic {ADMIN}"),),
            (("authorization", "Bearer"),),
            (("authorization", f"Bearer {ADMIN}"), ("authorization", f"Bearer {ADMIN}")),
        ):
            error = await raw_classify(gw.address, metadata)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert await code_of(gw.address, ADMIN) == grpc.StatusCode.OK
        assert await code_of(gw.address, f"  {ADMIN}") == grpc.StatusCode.OK  # spaces trimmed


async def test_a_key_may_call_only_its_models_and_rpcs() -> None:
    async with running(auth_config(DEFAULT_KEYS)) as gw:
        assert await code_of(gw.address, SEARCH, "embed") == grpc.StatusCode.OK
        assert await code_of(gw.address, SEARCH, "models") == grpc.StatusCode.OK
        assert await code_of(gw.address, SEARCH, "classify") == grpc.StatusCode.PERMISSION_DENIED
        async with AsyncLmforgeClient(gw.address, timeout=3.0, api_key=SEARCH) as client:
            with pytest.raises(LmforgeError) as unknown:  # denied, not NOT_FOUND: no probing
                await client.embed("no-such-model", ["x"])
    assert unknown.value.code == grpc.StatusCode.PERMISSION_DENIED


async def test_health_is_public_and_reflection_needs_a_key_unless_configured() -> None:
    async def probe(target: str, api_key: str | None) -> tuple[str, grpc.StatusCode]:
        metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        async with grpc.aio.insecure_channel(target) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3.0
            )
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                metadata=metadata,
                timeout=3.0,
            )
            try:
                async for _ in call:
                    pass
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
        return health_pb2.HealthCheckResponse.ServingStatus.Name(health.status), code

    async with running(auth_config(DEFAULT_KEYS)) as gw:
        await eventually(lambda: gw.health.serving)
        assert await probe(gw.address, None) == ("SERVING", grpc.StatusCode.UNAUTHENTICATED)
        assert await probe(gw.address, SEARCH) == ("SERVING", grpc.StatusCode.OK)
    async with running(auth_config(DEFAULT_KEYS, public_reflection=True)) as gw:
        await eventually(lambda: gw.health.serving)
        assert (await probe(gw.address, None))[1] == grpc.StatusCode.OK


async def test_rate_limit_answers_resource_exhausted_with_retry_info() -> None:
    keys = [key("admin", ADMIN, rate_per_s=2, burst=2)]
    async with running(auth_config(keys)) as gw:
        metadata = (("authorization", f"Bearer {ADMIN}"),)
        async with grpc.aio.insecure_channel(gw.address) as channel:
            stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
            request = classify_pb2.ClassifyRequest(model="sentiment", inputs=["x"])
            await stub.Classify(request, metadata=metadata)
            await stub.Classify(request, metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Classify(request, metadata=metadata)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate_per_s=2" in (info.value.details() or "")
    delay = retry_delay(status_detail(info.value))
    assert delay is not None and 0.05 < delay <= 0.5, delay


async def test_concurrency_quota_refuses_the_calls_beyond_it_and_frees_slots_after() -> None:
    keys = [key("admin", ADMIN, max_concurrent=2), key("other", SEARCH)]
    async with running(auth_config(keys), FakeBackend(delay_s=0.3)) as gw:
        codes = await asyncio.gather(*(code_of(gw.address, ADMIN) for _ in range(5)))
        other = await code_of(gw.address, SEARCH)  # another key is not affected
        after = await code_of(gw.address, ADMIN)
    assert sorted(c.name for c in codes).count("OK") == 2
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 3
    assert other == after == grpc.StatusCode.OK


async def test_keys_rotate_by_reload_without_failing_the_keys_that_stay() -> None:
    before = auth_config([key("admin", ADMIN), key("search", SEARCH)])
    new_secret = "search-secret-2"
    after = auth_config([key("admin", ADMIN), key("search", new_secret)])
    async with running(before, FakeBackend(delay_s=0.005)) as gw:
        failures: list[grpc.StatusCode] = []
        calls = 0
        stop = asyncio.Event()

        async def caller() -> None:
            nonlocal calls
            while not stop.is_set():
                code = await code_of(gw.address, ADMIN)
                calls += 1
                if code != grpc.StatusCode.OK:
                    failures.append(code)

        tasks = [asyncio.create_task(caller()) for _ in range(4)]
        await eventually(lambda: calls >= 8)
        assert await code_of(gw.address, SEARCH) == grpc.StatusCode.OK
        await gw.reload(after)
        old = await code_of(gw.address, SEARCH)
        new = await code_of(gw.address, new_secret)
        reloaded_at = calls
        await eventually(lambda: calls >= reloaded_at + 8)  # calls go on across the reload
        stop.set()
        await asyncio.gather(*tasks)
    assert failures == [] and calls > 10
    assert old == grpc.StatusCode.UNAUTHENTICATED and new == grpc.StatusCode.OK


def test_a_key_allowing_an_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"auth\.keys\.0 .* unknown models \['nope'\]"):
        auth_config([key("a", ADMIN, models=["nope"])])
    with pytest.raises(ConfigError, match="same sha256"):
        auth_config([key("a", ADMIN), key("b", ADMIN)])


def test_streams_beyond_the_limit_are_refused_and_released_slots_are_reused() -> None:
    config = auth_config([], enabled=False).with_overrides(
        {"limits": {"max_concurrent_streams": 2}}
    )
    rejected: list[tuple[str, str]] = []
    gate = Admission(
        AdmissionPolicy.from_config(config), on_reject=lambda *why: rejected.append(why)
    )
    first = gate.enter(None, generation=True)
    gate.enter(None, generation=True)
    with pytest.raises(Overloaded, match=r"limits\.max_concurrent_streams=2") as info:
        gate.enter(None, generation=True)
    assert info.value.retry_after is not None
    gate.enter(None)  # unary: no stream limit
    first.release()
    first.release()  # idempotent
    gate.enter(None, generation=True)
    assert gate.generations_in_flight == 2
    assert rejected == [("streams", "anonymous")]


def test_identify_names_why_a_call_is_refused() -> None:
    guard = AccessInterceptor(AccessPolicy.from_config(auth_config(DEFAULT_KEYS)))
    bearer = (("authorization", f"Bearer {SEARCH}"),)
    assert guard.identify("/lmforge.v1.InferenceService/Embed", bearer, "minilm") == "search"
    with pytest.raises(Unauthenticated, match="missing"):
        guard.identify("/lmforge.v1.InferenceService/Embed", (), "minilm")
    with pytest.raises(PermissionDenied, match="may not call Classify"):
        guard.identify("/lmforge.v1.InferenceService/Classify", bearer, "sentiment")
    with pytest.raises(PermissionDenied, match="may not use model 'sentiment'"):
        guard.identify("/lmforge.v1.InferenceService/Embed", bearer, "sentiment")
    samples = {
        s.labels["reason"]: s.value
        for s in guard.rejections.collect()[0].samples
        if s.name.endswith("_total")
    }
    assert samples == {"unauthenticated": 1.0, "permission_denied": 2.0}


def test_key_quotas_are_decided_by_admission_per_key_name() -> None:
    keys = [key("admin", ADMIN, max_concurrent=1, rate_per_s=1, burst=2), key("other", SEARCH)]
    now = [0.0]
    gate = Admission(AdmissionPolicy.from_config(auth_config(keys)), clock=lambda: now[0])
    held = gate.enter("admin")
    with pytest.raises(Overloaded, match="max_concurrent=1"):
        gate.enter("admin")
    gate.enter("other").release()  # another key is not affected
    held.release()
    gate.enter("admin").release()  # the second token of the burst
    with pytest.raises(Overloaded, match="rate_per_s=1") as info:
        gate.enter("admin")
    assert info.value.retry_after == pytest.approx(1.0)
    now[0] = 1.0
    gate.enter("admin").release()
    assert gate.in_flight == 0


def test_requests_beyond_max_concurrent_requests_are_refused_until_one_ends() -> None:
    config = auth_config([], enabled=False).with_overrides(
        {"server": {"max_concurrent_requests": 1}}
    )
    gate = Admission(AdmissionPolicy.from_config(config))
    with gate.enter(None), pytest.raises(Overloaded, match=r"server\.max_concurrent_requests=1"):
        gate.enter(None)
    gate.enter(None)


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1) == 0.0
    bucket.take(100.0)
    assert bucket.tokens == pytest.approx(2.0)  # capped at the burst, one taken


def test_hash_key_command_prints_the_sha256_of_stdin() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "hash-key"],
        input="my-key\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == hash_key("my-key")
    assert len(done.stdout.strip()) == 64
