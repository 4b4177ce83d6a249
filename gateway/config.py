"""The gateway's configuration: one typed root object, loaded from YAML once.

Example::

    server: {host: 127.0.0.1, port: 50051, metrics_port: 9464}
    triton: {url: 127.0.0.1:8001, connect_timeout_s: 2, request_timeout_s: 30}
    limits: {max_inputs_per_request: 64, max_chars_per_input: 8192}
    models:
      - {name: sentiment, task: classify, triton_model: sentiment}
      - {name: minilm, task: embed, triton_model: minilm, version: 1}

Unknown keys are errors; :meth:`GatewayConfig.from_yaml` raises :class:`ConfigError` naming
the file and the offending key path (``models.1.tsk``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lmforge.strict import StrictModel, load_yaml_mapping, validate

Task = Literal["embed", "classify", "generate"]
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535, description="0 picks a free port")
    metrics_port: int | None = Field(
        default=9464, ge=0, le=65535, description="Prometheus port; null disables it"
    )
    grace_period_s: float = Field(default=10.0, ge=0, description="in-flight RPCs get this long")
    reflection: bool = True
    max_concurrent_requests: int = Field(
        default=512, ge=1, description="beyond this, requests fail with RESOURCE_EXHAUSTED"
    )


class TritonConfig(StrictModel):
    url: str = Field(default="127.0.0.1:8001", min_length=1, description="host:port (gRPC)")
    connect_timeout_s: float = Field(
        default=2.0, gt=0, description="timeout of health and metadata calls"
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="inference timeout when the caller sets no deadline"
    )
    health_poll_interval_s: float = Field(default=0.5, gt=0)
    model_info_ttl_s: float = Field(
        default=30.0, gt=0, description="how long model config parameters are cached"
    )


class LimitsConfig(StrictModel):
    max_inputs_per_request: int = Field(default=64, ge=1)
    max_chars_per_input: int = Field(default=8192, ge=1)


class ModelConfig(StrictModel):
    name: str = Field(pattern=_NAME_PATTERN, description="logical name used in requests")
    task: Task
    triton_model: str = Field(pattern=_NAME_PATTERN)
    version: int | None = Field(default=None, ge=1, description="null: Triton's choice")


class GatewayConfig(StrictModel):
    server: ServerConfig = ServerConfig()
    triton: TritonConfig = TritonConfig()
    limits: LimitsConfig = LimitsConfig()
    models: tuple[ModelConfig, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_unique(self) -> GatewayConfig:
        seen: dict[str, int] = {}
        for index, model in enumerate(self.models):
            if model.name in seen:
                raise ValueError(
                    f"models.{index}.name {model.name!r} repeats models.{seen[model.name]}.name"
                )
            seen[model.name] = index
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> GatewayConfig:
        """A copy with some ``section.key`` values replaced, validated again."""
        data = self.model_dump()
        for section, values in overrides.items():
            if section not in data or not isinstance(data[section], dict):
                raise ConfigError(f"unknown config section {section!r}")
            data[section].update(values)
        return _validate(data, source="overrides")

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "<mapping>") -> GatewayConfig:
        return _validate(data, source=source)

    @classmethod
    def from_yaml(cls, path: Path | str) -> GatewayConfig:
        data = load_yaml_mapping(path, what="gateway config", error=ConfigError)
        return _validate(data, source=str(path))


def _validate(data: Any, *, source: str) -> GatewayConfig:
    return validate(GatewayConfig, data, source=source, what="gateway config", error=ConfigError)
