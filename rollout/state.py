"""What a rollout changed, kept on disk until it is promoted or rolled back."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rollout.errors import RolloutError
from rollout.gateway_file import write_atomically


@dataclass
class RolloutState:
    """What a rollout changed, kept in ``plan.state_path`` until it is promoted or rolled back
    (so ``lmforge rollout --rollback`` can undo it from another process)."""

    pid: int
    route: str
    task: str
    base: dict[str, Any]  # the route's config entry before the rollout
    old: dict[str, Any]  # the old deployment, pinned to its version
    new: dict[str, Any]  # the new deployment
    triton_models: list[str]  # [ensemble, encoder] (loaded in this order), or [model]
    old_version: int
    new_version: int
    created: list[str] = field(default_factory=list)  # version folders this rollout wrote
    configs: dict[str, str] = field(default_factory=dict)  # config.pbtxt before the rollout
    loaded: bool = False  # Triton was asked to serve the new version
    phase: str = "starting"

    def save(self, path: Path) -> None:
        write_atomically(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RolloutState:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise RolloutError(f"cannot read rollout state {path}: {exc}") from exc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
