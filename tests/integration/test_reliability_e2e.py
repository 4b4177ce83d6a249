"""Reliability and security end to end: a TLS tritonserver (supervised), a gateway process with
TLS, an API key and gateway-side tokenization; hostile requests and a SIGKILLed Triton.

This module kills its Triton, so it keeps its own server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from lmforge_client.client import AsyncLmforgeClient, LmforgeClient, LmforgeError

from benchmarks.fuzz import fuzz
from gateway.auth import hash_key
from gateway.processes import GatewayProcess, gateway_config, start_gateway
from gateway.tls import channel_credentials
from tests.certificates import Authority

pytestmark = pytest.mark.integration
pytest.importorskip("cryptography")

KEY = "integration-key"
MODELS = [{"name": "minilm", "task": "embed", "triton_model": "minilm"}]


@dataclass
class Stack:
    triton: Any
    supervisor: Any
    restarts: list[float]
    gateway: GatewayProcess
    credentials: grpc.ChannelCredentials


@pytest.fixture(scope="module")
def stack(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from triton_host.launcher import TritonServer
    from triton_host.supervisor import RestartPolicy, TritonSupervisor

    folder = tmp_path_factory.mktemp("pki")
    ca = Authority.create(folder, "lmforge")
    triton_cert = ca.issue("triton", server=True)
    gateway_cert = ca.issue("gateway", server=True)
    tls_args = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={triton_cert.cert_file}",
        f"--grpc-server-key={triton_cert.key_file}",
        f"--grpc-root-cert={ca.cert_file}",
    ]
    restarts: list[float] = []
    with (
        TritonServer(demo_repository, extra_args=tls_args) as triton,
        TritonSupervisor(
            triton,
            RestartPolicy(initial_backoff_s=0.5, poll_interval_s=0.2),
            on_restart=lambda _n: restarts.append(time.monotonic()),
        ) as supervisor,
    ):
        config = gateway_config(triton.grpc_url, MODELS, max_inputs_per_request=8)
        config["triton"].update(repository=str(demo_repository), tls={"ca_file": str(ca.cert_file)})
        config["server"]["tls"] = {
            "cert_file": str(gateway_cert.cert_file),
            "key_file": str(gateway_cert.key_file),
        }
        config["auth"] = {"keys": [{"name": "it", "sha256": hash_key(KEY)}]}
        workdir = tmp_path_factory.mktemp("gateway")
        with start_gateway(workdir, config) as gateway:
            yield Stack(triton, supervisor, restarts, gateway, channel_credentials(ca.cert_file))


def client(stack: Stack, **kwargs: Any) -> LmforgeClient:
    return LmforgeClient(stack.gateway.target, credentials=stack.credentials, **kwargs)


def test_tls_gateway_with_a_key_embeds_through_a_tls_triton(stack: Stack) -> None:
    with client(stack, api_key=KEY, timeout=30) as c:
        c.wait_for_health("SERVING", 60)
        reply = c.embed("minilm", ["served over TLS both ways"])
    assert reply.dimensions == 384 and reply.input_tokens[0] > 2
    with client(stack, timeout=5) as anonymous, pytest.raises(LmforgeError) as info:
        anonymous.embed("minilm", ["no key"])
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    plaintext = LmforgeClient(stack.gateway.target, api_key=KEY, timeout=3)
    with plaintext, pytest.raises(LmforgeError) as refused:
        plaintext.embed("minilm", ["plaintext"])
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE


def test_fuzzed_requests_against_real_triton_are_never_internal(stack: Stack) -> None:
    rss = Path(f"/proc/{stack.gateway.process.pid}/status")

    def rss_mib() -> float:
        line = next(x for x in rss.read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    before = rss_mib()
    report = asyncio.run(
        fuzz(
            stack.gateway.target,
            400,
            ["minilm"],
            seed=7,
            concurrency=8,
            credentials=stack.credentials,
            api_key=KEY,
        )
    )
    assert report.internal == 0 and report.hung == 0, report.failures
    assert report.codes["OK"] > 0 and report.codes["INVALID_ARGUMENT"] > 0, report.codes
    assert stack.gateway.process.poll() is None
    assert rss_mib() - before < 100, (before, rss_mib())


def test_killed_triton_is_answered_unavailable_then_restarted_and_recovered_within_5s(
    stack: Stack,
) -> None:
    from triton_host.launcher import SHM_DIR, group_members

    async def scenario() -> tuple[list[tuple[float, float, str]], list[str], float]:
        events: list[tuple[float, float, str]] = []
        health: list[str] = []
        async with AsyncLmforgeClient(
            stack.gateway.target, timeout=5.0, credentials=stack.credentials, api_key=KEY
        ) as c:
            await c.wait_for_health("SERVING", 60)

            async def one(i: int) -> None:
                began = time.monotonic()
                try:
                    await c.embed("minilm", [f"sentence number {i}"])
                    code = "OK"
                except LmforgeError as exc:
                    code = exc.code.name
                events.append((began, time.monotonic(), code))

            tasks = []
            killed_at = 0.0
            # 10 requests a second: at least 15 s, and on until 3 s after the supervisor has
            # Triton back (a restart that loads the generate model can take longer than the
            # first 15 s on a loaded machine), at most 90 s
            i = 0
            while i < 150 or not (stack.restarts and time.monotonic() > stack.restarts[-1] + 3):
                if i == 20:
                    killed_at = time.monotonic()
                    os.kill(stack.triton.pid, signal.SIGKILL)
                if i % 5 == 0:
                    health.append(await c.health())
                tasks.append(asyncio.create_task(one(i)))
                await asyncio.sleep(0.1)
                i += 1
                if i >= 900:
                    break
            async with asyncio.timeout(10):
                await asyncio.gather(*tasks)
        return events, health, killed_at

    pid, prefix = stack.triton.pid, stack.triton.shm_prefix
    events, health, killed_at = asyncio.run(scenario())
    codes = {code for _, _, code in events}
    assert len(events) >= 150 and codes <= {"OK", "UNAVAILABLE"}, codes
    assert max(end - began for began, end, _ in events) < 5.0
    assert "NOT_SERVING" in health
    assert stack.restarts and stack.restarts[-1] > killed_at
    back = stack.restarts[-1]
    first_ok = min(end for _, end, code in events if code == "OK" and end > back)
    assert first_ok - back < 5.0, first_ok - back
    assert events[-1][2] == "OK"
    assert group_members(pid) == []  # no orphaned python-backend stubs
    assert list(SHM_DIR.glob(f"{prefix}*")) == []  # nor their shared memory
