"""The rollout plan: a strict YAML file, validated once (unknown keys, stage order and
ranges are errors naming the key), its relative paths taken relative to the plan file.

::

    route: minilm                       # the gateway's logical model
    new_version: 2                      # default: the highest version folder + 1
    source: ./minilm_encoder_v2         # the new version folder; default: copy the old one
    stages: [1, 10, 50, 100]            # percent, or {weight: 10, dwell_s: 60}, {shadow: 0.5}
    dwell_s: 30
    checks: {max_error_rate: 0.01, min_requests: 20, max_latency_ratio: 1.5}
    gateway: {target: 127.0.0.1:50051, config: gateway.yaml, metrics_url: http://127.0.0.1:9464/metrics}
    triton: {url: 127.0.0.1:8001, repository: ./model_repository}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from lmforge_core.strict import StrictModel, load_yaml_mapping, validate
from rollout.errors import RolloutError


class GatewayTarget(StrictModel):
    target: str = Field(min_length=1, description="host:port of the gateway's gRPC port")
    config: Path = Field(description="the gateway's config file; rewritten atomically")
    metrics_url: str = Field(min_length=1, description="http://host:port/metrics")
    api_key_env: str | None = Field(default=None, description="env variable holding a key")
    ca_file: Path | None = Field(default=None, description="CA of a TLS gateway")
    apply_timeout_s: float = Field(default=30.0, gt=0, description="wait for a config reload")
    drain_s: float = Field(
        default=2.0, ge=0, description="after a deployment stops getting new requests"
    )


class TritonTarget(StrictModel):
    url: str = Field(min_length=1, description="host:port of Triton's gRPC port")
    repository: Path = Field(description="the model repository Triton serves (read-write)")
    load_timeout_s: float = Field(default=300.0, gt=0)


class Warmup(StrictModel):
    requests: int = Field(default=16, ge=0, description="sequential, one sentence each")
    max_failures: int = Field(default=0, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)


class Probe(StrictModel):
    interval_s: float = Field(default=0.5, gt=0, description="one request to each version")
    timeout_s: float = Field(default=10.0, gt=0)


class Checks(StrictModel):
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    min_requests: int = Field(default=20, ge=1, description="new-version requests to pass")
    max_latency_ratio: float = Field(
        default=1.5, gt=0, description="the route's p95 in a stage / its p95 before"
    )
    latency_slack_ms: float = Field(default=5.0, ge=0, description="added to the p95 limit")
    min_latency_samples: int = Field(default=20, ge=1, description="requests per p95")
    baseline_s: float = Field(
        default=10.0, ge=0, description="the old version alone, before the first stage"
    )
    min_shadow_agreement: float = Field(default=0.99, ge=0, le=1)
    min_shadow_compared: int = Field(default=10, ge=1)
    interval_s: float = Field(default=0.5, gt=0, description="how often a stage is checked")
    max_wait_s: float = Field(
        default=60.0, ge=0, description="past the dwell, waiting for enough samples"
    )


class Stage(StrictModel):
    """``weight``: percent of the route's traffic the new version answers; ``shadow``: the
    share of requests copied to it (answers compared, never returned)."""

    weight: float | None = Field(default=None, gt=0, le=100)
    shadow: float | None = Field(default=None, gt=0, le=1)
    dwell_s: float | None = Field(default=None, ge=0, description="null: the plan's dwell_s")

    @model_validator(mode="after")
    def _one_kind(self) -> Stage:
        if (self.weight is None) == (self.shadow is None):
            raise ValueError("a stage has either weight (percent) or shadow (share), not both")
        return self

    @property
    def label(self) -> str:
        if self.shadow is not None:
            return f"shadow {self.shadow:.0%}"
        return f"canary {_percent(self.weight or 0.0)}"


def _percent(value: float) -> str:
    return f"{value:g}%"


DEFAULT_STAGES = (Stage(weight=1), Stage(weight=10), Stage(weight=50), Stage(weight=100))


class RolloutPlan(StrictModel):
    route: str = Field(min_length=1, description="the gateway's logical model")
    old_deployment: str | None = Field(default=None, description="default: the route's one")
    new_deployment: str | None = Field(default=None, description="default: <model>-v<N>")
    old_version: int | None = Field(default=None, ge=1, description="default: the served one")
    new_version: int | None = Field(default=None, ge=1, description="default: highest + 1")
    source: Path | None = Field(
        default=None,
        description="the new version folder of the encoder (of the model itself when it has "
        "no encoder); default: a copy of the old version (the same weights)",
    )
    stages: tuple[Stage, ...] = Field(default=DEFAULT_STAGES, min_length=1)
    dwell_s: float = Field(default=30.0, ge=0)
    checks: Checks = Checks()
    warmup: Warmup = Warmup()
    probe: Probe = Probe()
    gateway: GatewayTarget
    triton: TritonTarget
    keep_old_files: bool = Field(default=True, description="the old version stays on disk")
    state_file: Path | None = Field(
        default=None, description="default: .<gateway config>.rollout-<route>.json beside it"
    )

    @field_validator("stages", mode="before")
    @classmethod
    def _numbers_are_weights(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [
                {"weight": v} if isinstance(v, int | float) and not isinstance(v, bool) else v
                for v in value
            ]
        return value

    @model_validator(mode="after")
    def _stage_order(self) -> RolloutPlan:
        problem = stage_order_problem(self.stages)
        if problem:
            raise ValueError(problem)
        return self

    def dwell(self, stage: Stage) -> float:
        return self.dwell_s if stage.dwell_s is None else stage.dwell_s

    @property
    def state_path(self) -> Path:
        if self.state_file is not None:
            return self.state_file
        config = self.gateway.config
        return config.with_name(f".{config.name}.rollout-{self.route}.json")


def stage_order_problem(stages: Sequence[Stage]) -> str | None:
    """Why ``stages`` is not a rollout (None when it is): shadow stages come first, weights
    rise strictly and the last stage gives the new version all of the traffic."""
    seen_weight = False
    last = 0.0
    for index, stage in enumerate(stages):
        if stage.shadow is not None:
            if seen_weight:
                return f"stages.{index}: a shadow stage must come before the weighted ones"
            continue
        weight = stage.weight or 0.0
        if weight <= last:
            return f"stages.{index}: weight {weight:g} does not rise above {last:g}"
        seen_weight, last = True, weight
    if not seen_weight or last != 100:
        return "the last stage must give the new version weight 100"
    return None


def _resolve_paths(data: Any, base: Path) -> Any:
    """The plan with its relative paths made relative to ``base`` (the plan's folder)."""
    if not isinstance(data, dict):
        return data

    def fix(value: Any) -> Any:  # leave what is not a path for the validation to name
        return str((base / value).resolve()) if isinstance(value, str) else value

    for key in ("source", "state_file"):
        if data.get(key) is not None:
            data[key] = fix(data[key])
    for section, keys in (("gateway", ("config", "ca_file")), ("triton", ("repository",))):
        part = data.get(section)
        if isinstance(part, dict):
            for key in keys:
                if part.get(key) is not None:
                    part[key] = fix(part[key])
    return data


def load_plan(path: Path) -> RolloutPlan:
    data = load_yaml_mapping(path, what="rollout plan", error=RolloutError)
    data = _resolve_paths(data, Path(path).resolve().parent)
    return validate(RolloutPlan, data, source=str(path), what="rollout plan", error=RolloutError)
