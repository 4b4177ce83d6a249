"""Logical model names → backend targets, from the gateway config."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.backend import ModelTarget
from gateway.config import ModelConfig, Task
from gateway.errors import FieldViolation, InvalidInput, ModelNotFound


class ModelRegistry:
    def __init__(self, models: Iterable[ModelConfig]) -> None:
        self._targets = {m.name: ModelTarget.from_config(m) for m in models}

    @property
    def targets(self) -> tuple[ModelTarget, ...]:
        return tuple(self._targets.values())

    def known(self, name: str) -> bool:
        return name in self._targets

    def resolve(self, name: str, task: Task) -> ModelTarget:
        """The target serving logical model ``name``, which must do ``task``."""
        target = self._targets.get(name)
        if target is None:
            raise ModelNotFound(
                f"unknown model {name!r}; served models: {', '.join(sorted(self._targets))}"
            )
        if target.task != task:
            raise InvalidInput.from_violations(
                [FieldViolation("model", f"{name!r} is a {target.task} model, not {task}")]
            )
        return target
