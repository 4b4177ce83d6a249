"""The one strict-config base of the project, shared by every typed configuration.

Every config object (gateway, trainer run, repository spec, pipeline, routing, batching) is
a :class:`StrictModel`: unknown keys are errors and instances are frozen. Loading goes
through :func:`load_yaml_mapping` and :func:`validate`, which turn pydantic's errors into
one message naming the source and every offending key path (``models.1.tsk: ...``), raised
as the caller's own error class.

This module imports nothing from the project, so any package may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """A frozen pydantic model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def format_validation_error(error: ValidationError, source: str, what: str) -> str:
    """``"<source>: invalid <what>: a.b: msg; c: msg"`` for every problem pydantic found."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        problems.append(f"{where}: {item['msg']}")
    return f"{source}: invalid {what}: " + "; ".join(problems)


def validate(model: type[M], data: Any, *, source: str, what: str, error: type[Exception]) -> M:
    """``model.model_validate(data)``; a mapping is required and every problem is named."""
    if not isinstance(data, Mapping):
        raise error(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(format_validation_error(exc, source, what)) from None


def load_yaml_mapping(path: Path | str, *, what: str, error: type[Exception]) -> Any:
    """The parsed YAML document at ``path``; unreadable files and bad YAML raise ``error``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
