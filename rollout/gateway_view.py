"""The running gateway as a rollout sees it: ``ListModels``, its metrics, pinned requests."""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rollout.counters import Counters, read_counters
from rollout.errors import RolloutError
from rollout.plan import GatewayTarget
from rollout.routes import RouteView


@dataclass(frozen=True)
class ProbeResult:
    deployment: str
    ok: bool
    latency_ms: float
    version: str  # the Triton model version that answered ("" on failure)
    code: str  # "OK" or the gRPC status name


class GatewayPort(Protocol):
    """What a rollout asks of the gateway (a fake implements it in the unit tests)."""

    def route_view(self, route: str) -> tuple[RouteView, dict[str, bool]]: ...

    def counters(self, route: str) -> Counters: ...

    def request(
        self, route: str, task: str, deployment: str, text: str, timeout: float
    ) -> ProbeResult: ...

    def close(self) -> None: ...


class GatewayView:
    """The running gateway as a rollout sees it: ``ListModels``, metrics, pinned requests."""

    def __init__(self, target: GatewayTarget) -> None:
        from lmforge_client.client import LmforgeClient

        credentials = None
        if target.ca_file is not None:
            from gateway.tls import channel_credentials

            credentials = channel_credentials(target.ca_file)
        api_key = os.environ.get(target.api_key_env) if target.api_key_env else None
        if target.api_key_env and not api_key:
            raise RolloutError(f"api_key_env {target.api_key_env} is not set")
        self.metrics_url = target.metrics_url
        self._client = LmforgeClient(target.target, credentials=credentials, api_key=api_key)

    def route_view(self, route: str) -> tuple[RouteView, dict[str, bool]]:
        """Per deployment (version, split weight, shadow), and whether the gateway tokenizes
        for it."""
        for model in self._client.list_models(timeout=10):
            if model.name == route:
                view = {
                    d.name: (d.triton_model_version, float(d.split_weight), bool(d.shadow))
                    for d in model.deployments
                }
                return view, {d.name: d.gateway_tokenizes for d in model.deployments}
        return {}, {}

    def counters(self, route: str) -> Counters:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return read_counters(response.read().decode("utf-8"), route)

    def request(
        self, route: str, task: str, deployment: str, text: str, timeout: float
    ) -> ProbeResult:
        """One pinned request; a reply from another version (a fallback) is a failure."""
        from lmforge_client.types import LmforgeError

        began = time.monotonic()
        try:
            if task == "classify":
                reply: Any = self._client.classify(
                    route, [text], top_k=1, timeout=timeout, deployment=deployment
                )
            else:
                reply = self._client.embed(route, [text], timeout=timeout, deployment=deployment)
        except LmforgeError as exc:
            return ProbeResult(deployment, False, _ms(began), "", exc.code.name)
        return ProbeResult(deployment, True, _ms(began), reply.served_by.triton_model_version, "OK")

    def close(self) -> None:
        self._client.close()


def _ms(began: float) -> float:
    return (time.monotonic() - began) * 1000


def warm_texts(repository: Path, model: str, count: int) -> list[str]:
    """Real sentences: the ones the builder left in ``<model>/perf_analyzer_input.json``, else
    the shipped SST-2 dev sentences."""
    from trainer.repository.perf_inputs import PERF_INPUT_FILE

    texts: list[str] = []
    path = repository / model / PERF_INPUT_FILE
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, IndexError):
        for row in json.loads(path.read_text(encoding="utf-8"))["data"]:
            texts.append(str(row["TEXT"]["content"][0]))
    if not texts:
        from trainer.datasets import dataset_file, read_column

        texts = read_column(dataset_file("sst2", "dev"), "sentence", max(count, 64))
    return texts
