"""The one place the gateway reads environment variables (pydantic-settings).

``LMFORGE_TRITON_URL``      overrides ``triton.url``
``LMFORGE_GATEWAY_HOST``    overrides ``server.host``
``LMFORGE_GATEWAY_PORT``    overrides ``server.port``
``LMFORGE_METRICS_PORT``    overrides ``server.metrics_port``
``LMFORGE_HTTP_PORT``       overrides ``server.http_port`` (the OpenAI-compatible HTTP API)

Precedence: command-line flag, then environment, then the YAML file. An empty variable counts
as unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from lmforge_core.strict import format_validation_error


class SettingsError(ValueError):
    """An environment variable holds a value the gateway cannot use."""


def _env(name: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(name))


class Settings(BaseSettings):
    """Values taken from the environment; ``None`` means "not set"."""

    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, env_ignore_empty=True, populate_by_name=True
    )

    triton_url: str | None = _env("LMFORGE_TRITON_URL")
    host: str | None = _env("LMFORGE_GATEWAY_HOST")
    port: int | None = Field(
        default=None, ge=0, le=65535, validation_alias=AliasChoices("LMFORGE_GATEWAY_PORT")
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, validation_alias=AliasChoices("LMFORGE_METRICS_PORT")
    )
    http_port: int | None = Field(
        default=None, ge=0, le=65535, validation_alias=AliasChoices("LMFORGE_HTTP_PORT")
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the process environment, or ``environ`` when given (tests)."""
        try:
            if environ is None:
                return cls()
            values = {k: v for k, v in environ.items() if k.startswith("LMFORGE_") and v != ""}
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(format_validation_error(exc, "environment", "settings")) from None

    def config_overrides(self) -> dict[str, dict[str, Any]]:
        """The overrides for :meth:`gateway.config.GatewayConfig.with_overrides`."""
        server: dict[str, Any] = {}
        if self.host is not None:
            server["host"] = self.host
        if self.port is not None:
            server["port"] = self.port
        if self.metrics_port is not None:
            server["metrics_port"] = self.metrics_port
        if self.http_port is not None:
            server["http_port"] = self.http_port
        triton: dict[str, Any] = {}
        if self.triton_url is not None:
            triton["url"] = self.triton_url
        return {"server": server, "triton": triton}
