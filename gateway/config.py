"""The gateway's configuration: one typed root object, loaded from YAML once.

Example::

    server: {host: 127.0.0.1, port: 50051, metrics_port: 9464, http_port: 8080}
    triton: {url: 127.0.0.1:8001, repository: /models}     # the endpoint named "default"
    endpoints:                                              # more Triton servers, by name
      gpu: {url: triton-gpu:8001}
    limits: {max_inputs_per_request: 64, max_chars_per_input: 8192}
    batching: {max_batch_size: 32, max_batch_tokens: 8192, max_wait_ms: 2}
    models:
      - {name: minilm, task: embed, triton_model: minilm}
      - name: sentiment
        task: classify
        deployments:
          - {name: small, triton_model: sentiment_student}
          - {name: large, triton_model: sentiment, endpoint: gpu}
        cascade: {first: small, then: large, threshold: 0.9}

``models`` entries are routes (:mod:`gateway.routing_config`). An endpoint's ``repository``
is the model repository that Triton serves, when the gateway can read it (the same folder, a
read-only volume): the gateway then tokenizes with each model's own ``tokenizer.json`` and
calls ``<model>_encoder`` directly, one Triton hop instead of two. Unknown keys are errors;
:meth:`GatewayConfig.from_yaml` raises :class:`ConfigError` naming the file and key path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from gateway.batching import BatchingConfig
from gateway.routing_config import DEFAULT_ENDPOINT, NAME_PATTERN, RouteConfig, Task
from gateway.security_config import AuthConfig, ClientTlsConfig, ServerTlsConfig
from lmforge_core.strict import StrictModel, load_yaml_mapping, validate

__all__ = [
    "DEFAULT_ENDPOINT",
    "ConfigError",
    "EndpointConfig",
    "GatewayConfig",
    "LimitsConfig",
    "RouteConfig",
    "ServerConfig",
    "Task",
    "TritonConfig",
]


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535, description="0 picks a free port")
    metrics_port: int | None = Field(
        default=9464, ge=0, le=65535, description="Prometheus port; null disables it"
    )
    http_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="the OpenAI-compatible HTTP API (docs/openai.md); null disables it",
    )
    grace_period_s: float = Field(default=10.0, ge=0, description="in-flight RPCs get this long")
    reflection: bool = True
    max_concurrent_requests: int = Field(
        default=512, ge=1, description="beyond this, requests fail with RESOURCE_EXHAUSTED"
    )
    reload_interval_s: float = Field(
        default=2.0, ge=0, description="how often the config file is checked; 0: only SIGHUP"
    )
    shutdown_delay_s: float = Field(
        default=0.0,
        ge=0,
        description="on SIGTERM, report NOT_SERVING and keep serving this long before refusing "
        "new RPCs (load balancers see the health change first)",
    )
    max_receive_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_send_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_streams_per_connection: int = Field(
        default=128, ge=1, description="HTTP/2 concurrent streams one connection may open"
    )
    tls: ServerTlsConfig | None = Field(default=None, description="null: plaintext")


class EndpointConfig(StrictModel):
    """One Triton server."""

    url: str = Field(min_length=1, description="host:port (gRPC)")
    repository: Path | None = Field(
        default=None, description="the model repository it serves, if this gateway can read it"
    )
    tls: ClientTlsConfig | None = Field(default=None, description="null: plaintext to Triton")


class TritonConfig(EndpointConfig):
    """The ``default`` endpoint, and the timeouts of every endpoint."""

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
    generate_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="the longest a Generate/GenerateStream call may run (a caller's shorter "
        "deadline wins)",
    )


class LimitsConfig(StrictModel):
    max_inputs_per_request: int = Field(default=64, ge=1)
    max_chars_per_input: int = Field(default=8192, ge=1)
    max_prompt_chars: int = Field(default=32768, ge=1, description="Generate: prompt length")
    max_new_tokens: int = Field(
        default=4096,
        ge=1,
        description="Generate: the most a request may ask for (the model's own limit applies too)",
    )
    max_stop_sequences: int = Field(default=16, ge=0, description="Generate: stop strings")
    max_stop_chars: int = Field(default=256, ge=1, description="Generate: one stop string")
    max_tokens_per_input: int | None = Field(
        default=None,
        ge=1,
        description="inputs with more words than this are refused before tokenization (each "
        "word is at least one token); the model's max_length applies after",
    )
    max_concurrent_streams: int = Field(
        default=64,
        ge=1,
        description="generations in flight (Generate and GenerateStream), gateway-wide",
    )


class GatewayConfig(StrictModel):
    server: ServerConfig = ServerConfig()
    triton: TritonConfig = TritonConfig()
    endpoints: dict[str, EndpointConfig] = Field(default_factory=dict)
    limits: LimitsConfig = LimitsConfig()
    batching: BatchingConfig = BatchingConfig()
    models: tuple[RouteConfig, ...] = Field(min_length=1)
    auth: AuthConfig | None = Field(default=None, description="null: no API keys needed")

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        seen: dict[str, int] = {}
        for index, model in enumerate(self.models):
            if model.name in seen:
                raise ValueError(
                    f"models.{index}.name {model.name!r} repeats models.{seen[model.name]}.name"
                )
            seen[model.name] = index
        for name in self.endpoints:
            if name == DEFAULT_ENDPOINT:
                raise ValueError(f"endpoints.{name}: the default endpoint is the 'triton' section")
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"endpoints.{name}: not a valid endpoint name")
        known = self.endpoint_names
        for index, model in enumerate(self.models):
            for deployment in model.deployment_configs:
                if deployment.endpoint not in known:
                    raise ValueError(
                        f"models.{index} ({model.name!r}): deployment {deployment.name!r} names "
                        f"endpoint {deployment.endpoint!r}; endpoints are {sorted(known)}"
                    )
        for index, key in enumerate(self.auth.keys if self.auth else ()):
            unknown = sorted(set(key.models) - {"*"} - set(seen))
            if unknown:
                raise ValueError(
                    f"auth.keys.{index} ({key.name!r}) allows unknown models {unknown}; "
                    f"models are {sorted(seen)}"
                )
        if self.limits.max_inputs_per_request > self.batching.max_queued_inputs:
            raise ValueError(
                f"limits.max_inputs_per_request {self.limits.max_inputs_per_request} exceeds "
                f"batching.max_queued_inputs {self.batching.max_queued_inputs}: a full request "
                "could never be admitted"
            )
        return self

    @property
    def endpoint_names(self) -> frozenset[str]:
        return frozenset({DEFAULT_ENDPOINT, *self.endpoints})

    def endpoint(self, name: str) -> EndpointConfig:
        return self.triton if name == DEFAULT_ENDPOINT else self.endpoints[name]

    def model(self, name: str) -> RouteConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def batching_for(self, route: RouteConfig) -> BatchingConfig:
        return route.batching if route.batching is not None else self.batching

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
