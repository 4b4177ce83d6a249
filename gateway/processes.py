"""Start the gateway as a child process on free ports (tests, benchmarks, tools).

``lmforge up`` runs the gateway in its own process; everything else that needs a real
gateway talking gRPC over a socket (integration tests, benchmarks) starts one here, so there
is one way to do it: write the config, start ``python -m gateway serve``, wait until its
port answers (or until its health is SERVING), stop it with SIGTERM.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import yaml

from lmforge_core.net import LOCALHOST, free_ports


@dataclass
class GatewayProcess:
    """A running ``lmforge-gateway serve``; a context manager that stops it."""

    process: subprocess.Popen[bytes]
    target: str
    metrics_port: int
    config_path: Path
    log_path: Path

    @property
    def metrics_url(self) -> str:
        return f"http://{LOCALHOST}:{self.metrics_port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def gateway_config(
    triton_url: str, models: Sequence[Mapping[str, Any]], **limits: int
) -> dict[str, Any]:
    """A gateway config on localhost with quick health polling (ports are set at start)."""
    return {
        "server": {"host": LOCALHOST},
        "triton": {"url": triton_url, "connect_timeout_s": 1.0, "health_poll_interval_s": 0.2},
        "limits": dict(limits),
        "models": [dict(m) for m in models],
    }


def start_gateway(
    workdir: Path,
    config: Mapping[str, Any],
    *,
    log_level: str = "INFO",
    timeout: float = 60.0,
    wait_serving: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    api_key: str | None = None,
) -> GatewayProcess:
    """Start ``python -m gateway serve`` with ``config`` (its ``server.port`` and
    ``server.metrics_port`` are replaced by free ports) and wait until its gRPC port accepts
    connections — or, with ``wait_serving``, until its health reports SERVING (over TLS with
    ``credentials`` when the config has ``server.tls``)."""
    from lmforge_client.client import LmforgeClient

    port, metrics_port = free_ports(2)
    data = dict(config)
    data["server"] = {**dict(data.get("server", {})), "port": port, "metrics_port": metrics_port}
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    log_path = workdir / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "--log-level",
                log_level,
                "serve",
                "--config",
                str(config_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(process, f"{LOCALHOST}:{port}", metrics_port, config_path, log_path)
    try:
        _wait_for_port(gateway, timeout)
        if wait_serving:
            with LmforgeClient(gateway.target, credentials=credentials, api_key=api_key) as client:
                client.wait_for_health("SERVING", timeout)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def _wait_for_port(gateway: GatewayProcess, timeout: float) -> None:
    """Until the port accepts TCP connections (plaintext or TLS alike)."""
    deadline = time.monotonic() + timeout
    host, _, port = gateway.target.rpartition(":")
    while True:
        if gateway.process.poll() is not None:
            raise RuntimeError(
                f"the gateway exited (code {gateway.process.returncode}):\n{gateway.log()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway did not open {gateway.target} in {timeout:.0f} s")
        time.sleep(0.05)
