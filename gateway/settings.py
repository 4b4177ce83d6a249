"""The one place the gateway reads environment variables.

``LMFORGE_TRITON_URL``      overrides ``triton.url``
``LMFORGE_GATEWAY_HOST``    overrides ``server.host``
``LMFORGE_GATEWAY_PORT``    overrides ``server.port``
``LMFORGE_METRICS_PORT``    overrides ``server.metrics_port``
``LMFORGE_GATEWAY_TARGET``  default ``--target`` of ``lmforge client``

Precedence: command-line flag, then environment, then the YAML file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_TRITON_URL = "LMFORGE_TRITON_URL"
ENV_HOST = "LMFORGE_GATEWAY_HOST"
ENV_PORT = "LMFORGE_GATEWAY_PORT"
ENV_METRICS_PORT = "LMFORGE_METRICS_PORT"
ENV_TARGET = "LMFORGE_GATEWAY_TARGET"

DEFAULT_TARGET = "127.0.0.1:50051"


class SettingsError(ValueError):
    """An environment variable holds a value the gateway cannot use."""


def _port(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer port") from None
    if not 0 <= value <= 65535:
        raise SettingsError(f"{name}={value} is outside 0..65535")
    return value


@dataclass(frozen=True)
class Settings:
    """Values taken from the environment; ``None`` means "not set"."""

    triton_url: str | None = None
    host: str | None = None
    port: int | None = None
    metrics_port: int | None = None
    target: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            triton_url=env.get(ENV_TRITON_URL) or None,
            host=env.get(ENV_HOST) or None,
            port=_port(env, ENV_PORT),
            metrics_port=_port(env, ENV_METRICS_PORT),
            target=env.get(ENV_TARGET) or None,
        )

    def config_overrides(self) -> dict[str, dict[str, Any]]:
        """The overrides for :meth:`gateway.config.GatewayConfig.with_overrides`."""
        server: dict[str, Any] = {}
        if self.host is not None:
            server["host"] = self.host
        if self.port is not None:
            server["port"] = self.port
        if self.metrics_port is not None:
            server["metrics_port"] = self.metrics_port
        triton: dict[str, Any] = {}
        if self.triton_url is not None:
            triton["url"] = self.triton_url
        return {"server": server, "triton": triton}
