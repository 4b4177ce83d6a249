"""Shared fixtures of the integration tests: real models, real tritonserver, real gateway."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo repository (minilm + sentiment) and its build report, once per session.

    The fine-tuned sentiment checkpoint is cached under ``$LMFORGE_CACHE``; the export,
    parity checks and repository writing run every session. Tests only read the repository.
    """
    from trainer.repository.demo import build_demo_repository

    return build_demo_repository(tmp_path_factory.mktemp("demo") / "repository")


@pytest.fixture(scope="session")
def demo_repository(demo_build: Any) -> Path:
    return Path(demo_build.path)


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    target: str
    metrics_port: int
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gateway(
    workdir: Path, triton_url: str, models: list[dict[str, object]], **limits: int
) -> GatewayProcess:
    """``lmforge serve`` as a child process on free ports, once its gRPC port answers."""
    import grpc

    from triton_models.launcher import free_ports

    port, metrics_port = free_ports(2)
    config = {
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port},
        "triton": {"url": triton_url, "connect_timeout_s": 1.0, "health_poll_interval_s": 0.2},
        "limits": dict(limits) if limits else {},
        "models": models,
    }
    config_path = workdir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = workdir / "gateway.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {log_path.read_text(errors='replace')}")
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                break
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError("gateway did not open its port in 60 s") from None
    return GatewayProcess(process, target, metrics_port, log_path)
