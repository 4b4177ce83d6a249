"""The routing section of the gateway config: one :class:`RouteConfig` per logical model.

A route is either today's shorthand (one Triton model on the ``default`` endpoint)::

    - {name: sentiment, task: classify, triton_model: sentiment, version: 2}

or a list of deployments plus optional policies::

    - name: sentiment
      task: classify
      deployments:
        - {name: small, triton_model: sentiment_small, endpoint: cpu}
        - {name: large, triton_model: sentiment_large, endpoint: gpu, version: 3}
        - {name: candidate, triton_model: sentiment_v4, endpoint: gpu}
      split: {small: 90, large: 10}
      length_rules: [{above_tokens: 256, deployment: large}]
      cascade: {first: small, then: large, threshold: 0.8}
      fallback: true
      shadow: {deployment: candidate, share: 0.05}
      breaker: {failures: 5, open_seconds: 5.0}

This module imports only the batching config from the gateway, so :mod:`gateway.config` may
embed it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from gateway.batching import BatchingConfig
from lmforge_core.strict import StrictModel

Task = Literal["embed", "classify", "generate"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DEFAULT_ENDPOINT = "default"

Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class DeploymentConfig(StrictModel):
    """One Triton model, at one version, on one Triton server (endpoint)."""

    name: str = Field(pattern=NAME_PATTERN, description="unique within the route")
    triton_model: str = Field(pattern=NAME_PATTERN)
    endpoint: str = Field(default=DEFAULT_ENDPOINT, pattern=NAME_PATTERN)
    version: int | None = Field(default=None, ge=1, description="null: Triton's choice")


class LengthRule(StrictModel):
    """Requests whose longest input has more than ``above_tokens`` tokens go to ``deployment``."""

    above_tokens: int = Field(ge=1)
    deployment: str


class CascadeConfig(StrictModel):
    """Ask ``first`` for every input; re-ask ``then`` where the top score is below ``threshold``."""

    first: str
    then: str
    threshold: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _distinct(self) -> CascadeConfig:
        if self.first == self.then:
            raise ValueError(f"cascade first {self.first!r} and then {self.then!r} must differ")
        return self


class ShadowConfig(StrictModel):
    """Copy ``share`` of the requests to ``deployment``; its answers are compared, not returned."""

    deployment: str
    share: float = Field(ge=0, le=1)


class BreakerConfig(StrictModel):
    """Open after ``failures`` consecutive failures; probe again after ``open_seconds``."""

    failures: int = Field(default=5, ge=1)
    open_seconds: float = Field(default=5.0, gt=0, allow_inf_nan=False)


class RouteConfig(StrictModel):
    """One logical model: where its requests may go and how one place is chosen."""

    name: str = Field(pattern=NAME_PATTERN, description="logical name used in requests")
    task: Task
    triton_model: str | None = Field(default=None, pattern=NAME_PATTERN)
    version: int | None = Field(default=None, ge=1)
    deployments: tuple[DeploymentConfig, ...] | None = Field(default=None, min_length=1)
    split: dict[str, Weight] | None = Field(default=None, min_length=1)
    length_rules: tuple[LengthRule, ...] = ()
    cascade: CascadeConfig | None = None
    fallback: bool = True
    shadow: ShadowConfig | None = None
    breaker: BreakerConfig = BreakerConfig()
    batching: BatchingConfig | None = Field(
        default=None, description="this route's batching; null: the gateway's default"
    )

    @property
    def deployment_configs(self) -> tuple[DeploymentConfig, ...]:
        """The deployments, the shorthand expanded to one named like its Triton model."""
        if self.deployments is None and self.triton_model is not None:
            shorthand = DeploymentConfig(
                name=self.triton_model, triton_model=self.triton_model, version=self.version
            )
            return (shorthand,)
        return self.deployments or ()

    @model_validator(mode="after")
    def _cross_checks(self) -> RouteConfig:
        self._check_shape()
        self._check_references()
        self._check_policies()
        return self

    def _check_shape(self) -> None:
        if (self.triton_model is None) == (self.deployments is None):
            given = "both" if self.deployments is not None else "neither"
            raise ValueError(
                f"route {self.name!r}: give either triton_model or deployments, not {given}"
            )
        if self.deployments is not None and self.version is not None:
            raise ValueError(
                f"route {self.name!r}: version {self.version} goes with triton_model; "
                "with deployments, set version per deployment"
            )

    def _check_references(self) -> None:
        names = [d.name for d in self.deployment_configs]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"route {self.name!r}: deployment name {name!r} repeats")
            seen.add(name)
        known = ", ".join(names)

        def check(where: str, name: str) -> None:
            if name not in seen:
                raise ValueError(
                    f"route {self.name!r}: {where} names deployment {name!r}, "
                    f"which is not one of its deployments: {known}"
                )

        for name in self.split or {}:
            check("split", name)
        for rule in self.length_rules:
            check("length_rules", rule.deployment)
        if self.cascade is not None:
            check("cascade.first", self.cascade.first)
            check("cascade.then", self.cascade.then)
        if self.shadow is not None:
            check("shadow", self.shadow.deployment)

    def _check_policies(self) -> None:
        if self.split is not None and sum(self.split.values()) <= 0:
            raise ValueError(f"route {self.name!r}: split weights {self.split} sum to 0")
        thresholds = [rule.above_tokens for rule in self.length_rules]
        repeated = sorted({t for t in thresholds if thresholds.count(t) > 1})
        if repeated:
            raise ValueError(f"route {self.name!r}: length_rules repeat above_tokens {repeated}")
        if self.cascade is not None and self.task != "classify":
            raise ValueError(
                f"route {self.name!r}: cascade needs task 'classify', not {self.task!r}"
            )
        if self.shadow is not None:
            self._check_shadow(self.shadow.deployment)

    def _check_shadow(self, shadow: str) -> None:
        if len(self.deployment_configs) == 1:
            raise ValueError(
                f"route {self.name!r}: shadow {shadow!r} is the only deployment; "
                "add the one that answers"
            )
        users = [
            where
            for where, names in (
                ("split", list(self.split or {})),
                ("length_rules", [r.deployment for r in self.length_rules]),
                ("cascade", [self.cascade.first, self.cascade.then] if self.cascade else []),
            )
            if shadow in names
        ]
        if users:
            raise ValueError(
                f"route {self.name!r}: shadow {shadow!r} only receives copies, "
                f"but {' and '.join(users)} also route{'s' if len(users) == 1 else ''} to it"
            )
