"""Reading a python-backend model's own ``config.pbtxt`` parameters (as Triton passes them)."""

from __future__ import annotations

from typing import Any


def string_parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """``parameters { key: K value { string_value: V } }`` as ``{K: V}``."""
    raw = model_config.get("parameters", {})
    return {key: value.get("string_value", "") for key, value in raw.items()}
