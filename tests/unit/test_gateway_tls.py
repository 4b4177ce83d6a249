"""TLS and mutual TLS on the gateway's port, with throw-away certificates, and their rotation."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from lmforge_client.client import AsyncLmforgeClient, LmforgeClient, LmforgeError

from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from gateway.tls import CertificateReloader, TlsError, channel_credentials
from tests.certificates import Authority, Issued
from tests.fake_backend import FakeBackend

pytest.importorskip("cryptography")

MODELS = [{"name": "sentiment", "task": "classify", "triton_model": "sentiment"}]


def tls_config(tls: dict[str, Any]) -> GatewayConfig:
    return GatewayConfig.from_mapping(
        {
            "server": {"port": 0, "metrics_port": None, "tls": tls},
            "triton": {"health_poll_interval_s": 0.05},
            "models": MODELS,
        }
    )


@contextlib.asynccontextmanager
async def running(config: GatewayConfig) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(config, FakeBackend())
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0, delay=0)


def creds(ca: Authority, client: Issued | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return channel_credentials(ca.cert_file)
    return channel_credentials(ca.cert_file, client.cert_file, client.key_file)


async def classify(target: str, credentials: grpc.ChannelCredentials | None) -> str:
    async with AsyncLmforgeClient(target, timeout=3.0, credentials=credentials) as client:
        reply = await client.classify("sentiment", ["a positive day"], top_k=1)
    return reply.results[0].top.label


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    server_ca = Authority.create(tmp_path, "server")
    client_ca = Authority.create(tmp_path, "clients")
    other_ca = Authority.create(tmp_path, "other")
    return {
        "server_ca": server_ca,
        "server": server_ca.issue("gateway", server=True),
        "client_ca": client_ca,
        "client": client_ca.issue("search-service", server=False),
        "other_ca": other_ca,
        "stranger": other_ca.issue("stranger", server=False),
    }


async def test_tls_gateway_answers_a_tls_client_and_refuses_plaintext(
    pki: dict[str, Any],
) -> None:
    server: Issued = pki["server"]
    cfg = tls_config({"cert_file": str(server.cert_file), "key_file": str(server.key_file)})
    async with running(cfg) as gw:
        assert await classify(gw.address, creds(pki["server_ca"])) == "positive"
        with pytest.raises(LmforgeError) as plaintext:
            await classify(gw.address, None)
        with pytest.raises(LmforgeError) as untrusted:  # the client does not trust this CA
            await classify(gw.address, creds(pki["other_ca"]))
    assert plaintext.value.code == grpc.StatusCode.UNAVAILABLE
    assert untrusted.value.code == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_clients_without_a_certificate_or_from_another_ca(
    pki: dict[str, Any],
) -> None:
    server: Issued = pki["server"]
    cfg = tls_config(
        {
            "cert_file": str(server.cert_file),
            "key_file": str(server.key_file),
            "client_ca_file": str(pki["client_ca"].cert_file),
        }
    )
    async with running(cfg) as gw:
        assert await classify(gw.address, creds(pki["server_ca"], pki["client"])) == "positive"
        refused = []
        for credentials in (
            None,
            creds(pki["server_ca"]),  # no client certificate
            creds(pki["server_ca"], pki["stranger"]),  # a certificate from another CA
        ):
            with pytest.raises(LmforgeError) as info:
                await classify(gw.address, credentials)
            refused.append(info.value.code)
        # the blocking client connects the same way (in a thread: this loop runs the server)
        credentials = creds(pki["server_ca"], pki["client"])

        def blocking_health() -> str:
            with LmforgeClient(gw.address, timeout=3.0, credentials=credentials) as client:
                return client.health()

        assert await asyncio.to_thread(blocking_health) == "SERVING"
    assert refused == [grpc.StatusCode.UNAVAILABLE] * 3


async def test_rotated_certificate_files_are_served_to_new_connections_without_restart(
    pki: dict[str, Any], tmp_path: Path
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    first: Issued = pki["server"]
    cert, key = live / "tls.crt", live / "tls.key"
    shutil.copy(first.cert_file, cert)
    shutil.copy(first.key_file, key)
    cfg = tls_config({"cert_file": str(cert), "key_file": str(key), "check_interval_s": 0})
    new_ca = Authority.create(tmp_path / "new", "rotated")
    async with running(cfg) as gw:
        assert await classify(gw.address, creds(pki["server_ca"])) == "positive"
        # a rotation that is half done (a key that does not fit) keeps the old pair
        shutil.copy(new_ca.issue("half", server=True).key_file, key)
        assert await classify(gw.address, creds(pki["server_ca"])) == "positive"
        second = new_ca.issue("gateway2", server=True)
        shutil.copy(second.cert_file, cert)
        shutil.copy(second.key_file, key)
        assert await classify(gw.address, creds(new_ca)) == "positive"
        with pytest.raises(LmforgeError):
            await classify(gw.address, creds(pki["server_ca"]))
        assert gw.certificates is not None and gw.certificates.reloads == 1


def test_certificate_and_key_that_do_not_belong_together_are_refused_at_start(
    pki: dict[str, Any],
) -> None:
    server: Issued = pki["server"]
    other: Issued = pki["stranger"]
    cfg = tls_config({"cert_file": str(server.cert_file), "key_file": str(other.key_file)})
    assert cfg.server.tls is not None
    with pytest.raises(TlsError, match="not a certificate and its key"):
        CertificateReloader(cfg.server.tls)


def test_require_client_cert_false_needs_a_client_ca() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match="require_client_cert"):
        tls_config({"cert_file": "a", "key_file": "b", "require_client_cert": False})
