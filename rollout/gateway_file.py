"""The gateway's config file: one route's entry replaced, the whole file validated as the
gateway would, written atomically (temporary file + ``os.replace``) for its reload to pick
up."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lmforge_core.strict import load_yaml_mapping
from rollout.errors import RolloutError


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a temporary file in the same folder, fsync, rename."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class GatewayConfigFile:
    """The gateway's YAML config; only the rolled-out route's entry is ever changed, and the
    whole file is validated as the gateway would before it is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        data = load_yaml_mapping(self.path, what="gateway config", error=RolloutError)
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise RolloutError(f"{self.path}: no models list")
        return data

    def route(self, name: str) -> dict[str, Any]:
        for entry in self.read()["models"]:
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        raise RolloutError(f"{self.path}: no route named {name!r}")

    def write_route(self, route: Mapping[str, Any]) -> bool:
        """Replace the entry named like ``route``; False when it was already so."""
        from gateway.config import ConfigError, GatewayConfig

        data = self.read()
        models = data["models"]
        index = next(
            (
                i
                for i, e in enumerate(models)
                if isinstance(e, dict) and e.get("name") == route["name"]
            ),
            None,
        )
        if index is None:
            raise RolloutError(f"{self.path}: no route named {route['name']!r}")
        if models[index] == dict(route):
            return False
        models[index] = dict(route)
        try:
            GatewayConfig.from_mapping(data, source=str(self.path))
        except ConfigError as exc:
            raise RolloutError(f"the rollout would write an invalid gateway config: {exc}") from exc
        write_atomically(self.path, yaml.safe_dump(data, sort_keys=False))
        return True
