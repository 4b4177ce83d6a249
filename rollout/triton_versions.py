"""Versions of a model in Triton (explicit model control): version folders on disk, the
``version_policy`` in ``config.pbtxt``, and ``load_model``."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from rollout.errors import RolloutError

logger = logging.getLogger(__name__)


def version_dirs(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def copy_version(source: Path, target: Path) -> None:
    """Copy a version folder (without ``__pycache__``) so that ``target`` appears complete
    or not at all."""
    if target.exists():
        raise RolloutError(f"{target} already exists; pick another new_version")
    staging = target.with_name(f".{target.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    if source.is_dir():
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        raise RolloutError(f"{source} is not a version folder")
    staging.rename(target)


def with_version_policy(text: str, versions: Sequence[int] | None) -> str:
    """A ``config.pbtxt`` (Triton's ``ModelConfig`` in protobuf text) with its
    ``version_policy`` set to ``specific`` ``versions`` (None: removed, Triton's default of
    the newest version)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    config.ClearField("version_policy")
    if versions is not None:
        config.version_policy.specific.versions.extend(int(v) for v in versions)
    return str(text_format.MessageToString(config))


def serves_newest(text: str) -> bool:
    """Whether a ``config.pbtxt`` leaves Triton's default policy: the newest version only."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    if not config.HasField("version_policy"):
        return True
    policy = config.version_policy
    return bool(policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions == 1)


class TritonPort(Protocol):
    """What a rollout asks of Triton (a fake implements it in the unit tests)."""

    def ready_versions(self, model: str) -> list[int]: ...

    def load(self, model: str) -> None: ...

    def close(self) -> None: ...


class TritonVersions:
    """Explicit model control of one Triton server (``tritonclient.grpc``)."""

    def __init__(self, url: str, timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url
        self.timeout = timeout
        self._client = grpcclient.InferenceServerClient(url)

    def ready_versions(self, model: str) -> list[int]:
        index = self._client.get_model_repository_index(as_json=True).get("models", [])
        return sorted(
            int(m["version"])
            for m in index
            if m.get("name") == model
            and m.get("state") == "READY"
            and m.get("version", "").isdigit()
        )

    def load(self, model: str) -> None:
        """(Re)load ``model`` from the repository. Triton keeps serving the loaded versions
        while it loads, unloads the versions its config no longer names once their requests
        finished, and reloads the models that depend on it (an ensemble) as well."""
        started = time.monotonic()
        self._client.load_model(model, client_timeout=self.timeout)
        logger.info("Triton (re)loaded %s (%.1f s)", model, time.monotonic() - started)

    def close(self) -> None:
        self._client.close()
