"""``lmforge serve`` / ``lmforge client`` registration, and the sync client and client CLI."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from lmforge_client.client import LmforgeClient, LmforgeError

from gateway.cli import build_parser, main
from gateway.config import GatewayConfig
from gateway.server import GatewayServer, load_config
from gateway.settings import Settings
from tests.fake_backend import FakeBackend

MODELS = [
    {"name": "sentiment", "task": "classify", "triton_model": "sentiment"},
    {"name": "minilm", "task": "embed", "triton_model": "minilm"},
]


@pytest.fixture
async def address() -> AsyncIterator[str]:
    config = GatewayConfig.from_mapping(
        {"server": {"port": 0, "metrics_port": None}, "models": MODELS}
    )
    async with GatewayServer(config, FakeBackend()) as server:
        yield server.address


def test_serve_command_is_registered_with_its_flags(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("triton: {url: 'a:1'}\nmodels:\n  - {name: m, task: embed, triton_model: m}\n")
    args = build_parser().parse_args(
        ["serve", "--config", str(path), "--port", "0", "--triton-url", "b:2"]
    )
    assert callable(args.handler)
    config = load_config(args, Settings(triton_url="env:3", metrics_port=9999))
    assert config.server.port == 0
    assert config.triton.url == "b:2"  # the flag wins over the environment
    assert config.server.metrics_port == 9999


def test_serve_with_bad_config_exits_with_status_2(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("models: [{name: m, task: embed, triton_model: m, extra: 1}]\n")
    assert main(["serve", "--config", str(path)]) == 2


async def test_sync_client_classifies_and_lists_models(address: str) -> None:
    def call() -> tuple[str, list[str], str]:
        with LmforgeClient(address, timeout=5) as client:
            reply = client.classify("sentiment", ["positive vibes"], top_k=2)
            models = [m.name for m in client.list_models()]
            return reply.results[0].top.label, models, client.health()

    label, models, _health = await asyncio.to_thread(call)
    assert label == "positive"
    assert models == ["sentiment", "minilm"]


async def test_sync_client_raises_typed_error_with_field_violations(address: str) -> None:
    def call() -> LmforgeError:
        with LmforgeClient(address, timeout=5) as client, pytest.raises(LmforgeError) as info:
            client.embed("minilm", ["ok", ""])
        return info.value

    error = await asyncio.to_thread(call)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["inputs[1]"]


async def test_client_cli_prints_json(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["client", "--target", address, "embed", "--model", "minilm", "--dimensions", "4", "hi"]
    assert await asyncio.to_thread(main, argv) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["dimensions"] == 4 and len(reply["embeddings"][0]) == 4

    assert await asyncio.to_thread(main, ["client", "--target", address, "models"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["sentiment", "minilm"]


async def test_client_cli_reports_errors_as_json_on_stderr(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["client", "--target", address, "classify", "--model", "nope", "text"]
    assert await asyncio.to_thread(main, argv) == 1
    error = json.loads(capsys.readouterr().err)["error"]
    assert error["code"] == "NOT_FOUND"


def test_serve_answers_unavailable_without_triton_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "server: {port: 0, metrics_port: null, grace_period_s: 1}\n"
        "triton: {url: '127.0.0.1:1', connect_timeout_s: 0.5}\n"
        "models:\n  - {name: minilm, task: embed, triton_model: minilm}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "lmforge", "serve", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stderr = process.stderr
    assert stderr is not None

    def pump() -> None:
        for line in stderr:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        address = None
        while address is None:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            if match := re.search(r"gateway listening on (\S+)", line):
                address = match.group(1)
        with LmforgeClient(address, timeout=5) as client:
            started = time.monotonic()
            with pytest.raises(LmforgeError) as info:
                client.embed("minilm", ["a"])
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 2.0
            assert client.health() == "NOT_SERVING"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        stderr.close()
