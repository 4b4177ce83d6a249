"""One measured run of ``lmforge bench perf`` on a built repository.

1. ``tritonserver`` starts with explicit model control and nothing loaded; each model's Triton
   models are loaded one at a time (``<name>_tokenize``, ``<name>_encoder``, the ``<name>``
   ensemble; or the one decoupled generate model) through ``POST
   /v2/repository/models/<m>/load``, which answers once the model is READY. A model's load
   time is the sum of those calls on an otherwise idle server: stub process start, imports,
   ONNX Runtime session (or checkpoint) creation.
2. The gateway starts in front of it with the routes ``lmforge up`` serves.
3. Per model: its in-process reference (:mod:`benchmarks.perf.references`), then a closed loop
   through the gateway (one SST-2 dev sentence per request): p50/p95/p99 latency and
   throughput; over the measured window the CPU use of tritonserver, the gateway and the
   model's python-backend stubs; after it, their resident memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.perf.checks import STUB_PREFIX, PerfConfigError
from benchmarks.perf.procs import CpuWindow, find_stubs, rss_mib
from benchmarks.perf.references import GENERATE_PROMPT, encoder_reference, generate_reference

logger = logging.getLogger(__name__)

GENERATE_REFERENCE_REQUESTS = 3


@dataclass(frozen=True)
class Load:
    """The closed loop run on every model."""

    concurrency: int = 1
    duration: float = 8.0  # measured seconds per model
    warmup: float = 2.0  # seconds of the same load before measuring
    new_tokens: int = 16  # per generate request

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.duration <= 0 or self.warmup < 0 or self.new_tokens < 1:
            raise PerfConfigError(f"invalid load {self}")


def components(repository: Path, model: str) -> list[str]:
    """The Triton models of one logical model, in load order (the ensemble last)."""
    parts = [f"{model}_tokenize", f"{model}_encoder"]
    if all((repository / p / "config.pbtxt").is_file() for p in parts):
        return [*parts, model]
    return [model]


def model_specs(repository: Path) -> dict[str, dict[str, Any]]:
    """The spec of every logical model of a built repository, from its manifest."""
    from trainer.repository.builder import MANIFEST

    manifest = json.loads((repository / MANIFEST).read_text(encoding="utf-8"))
    return {m["name"]: m for m in manifest["spec"]["models"]}


def load_model(http_url: str, name: str, timeout: float = 600.0) -> float:
    """Load ``name`` (explicit model control); seconds until Triton answered READY."""
    request = urllib.request.Request(
        f"{http_url}/v2/repository/models/{name}/load", data=b"", method="POST"
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise RuntimeError(f"loading {name} failed: HTTP {exc.code} {detail}") from None
    return time.perf_counter() - started


async def _gateway_load(
    target: str, model: str, task: str, sentences: list[str], load: Load, window: CpuWindow
) -> tuple[dict[str, Any], dict[str, float]]:
    from lmforge_client.client import AsyncLmforgeClient
    from lmforge_client.loadgen import closed_loop

    async with AsyncLmforgeClient(target, timeout=120) as client:

        async def call(i: int) -> object:
            text = sentences[i % len(sentences)]
            if task == "embed":
                return await client.embed(model, [text])
            if task == "classify":
                return await client.classify(model, [text])
            return await client.generate(
                model, GENERATE_PROMPT, max_new_tokens=load.new_tokens, temperature=0.0
            )

        if load.warmup > 0:
            await closed_loop(call, load.concurrency, load.warmup, warmup=0.0)
        window.start()
        result = await closed_loop(call, load.concurrency, load.duration, warmup=0.0)
        cpu = window.stop()
    return result.summary(), cpu


def _reference(
    repository: Path, spec: Mapping[str, Any], sentences: list[str], load: Load
) -> dict[str, float]:
    model = str(spec["name"])
    if spec["task"] == "generate":
        return generate_reference(repository, model, load.new_tokens, GENERATE_REFERENCE_REQUESTS)
    return encoder_reference(
        repository, model, int(spec["max_length"]), sentences, load.concurrency
    )


def model_figures(
    task: str, summary: dict[str, Any], reference: Mapping[str, float], load_parts: dict[str, float]
) -> dict[str, Any]:
    """A model's record: the served figures, the reference and the two checked ratios."""
    throughput = float(summary["throughput"])
    return {
        "task": task,
        "gateway": summary,
        "reference": dict(reference),
        "latency_ratio": round(summary["p50_ms"] / reference["p50_ms"], 4),
        "throughput_ratio": round(reference["throughput"] / throughput, 4)
        if throughput > 0
        else math.inf,
        "load_s": round(sum(load_parts.values()), 3),
        "load_parts_s": load_parts,
    }


def measure(
    repository: Path, models: Sequence[str], load: Load, sentences: list[str], workdir: Path
) -> dict[str, Any]:
    """Serve ``repository`` (Triton + gateway) and measure every model of ``models``."""
    from gateway.processes import gateway_config, start_gateway
    from trainer.repository.demo_serving import DEMO_MODELS
    from triton_host.launcher import TritonServer

    specs = model_specs(repository)
    routes = {m["name"]: m for m in DEMO_MODELS}
    results: dict[str, Any] = {}
    with TritonServer(repository, model_control_mode="explicit") as triton:
        if triton.pid is None:
            raise RuntimeError("tritonserver has no process id after start")
        loads: dict[str, dict[str, float]] = {}
        for model in models:
            loads[model] = {
                p: round(load_model(triton.http_url, p), 3) for p in components(repository, model)
            }
            logger.info("%s loaded in %.2f s %s", model, sum(loads[model].values()), loads[model])
        stubs = find_stubs(triton.pid)
        config = gateway_config(triton.grpc_url, [routes[m] for m in models])
        config["triton"]["repository"] = str(repository)
        started = time.perf_counter()
        with start_gateway(
            workdir / "gateway", config, log_level="WARNING", wait_serving=True
        ) as gateway:
            gateway_s = time.perf_counter() - started
            for model in models:
                task = str(specs[model]["task"])
                reference = _reference(repository, specs[model], sentences, load)
                own = {
                    f"{STUB_PREFIX}{p}": stubs[p]
                    for p in components(repository, model)
                    if p in stubs
                }
                pids = {"tritonserver": triton.pid, "gateway": gateway.process.pid, **own}
                summary, cpu = asyncio.run(
                    _gateway_load(
                        gateway.target,
                        model,
                        task,
                        sentences,
                        load,
                        CpuWindow(pids, frozenset(own)),
                    )
                )
                figures = model_figures(task, summary, reference, loads[model])
                figures["cpu_pct"] = cpu
                figures["rss_mib"] = {
                    name: round(rss_mib(pid, name in own), 1) for name, pid in pids.items()
                }
                results[model] = figures
                logger.info(
                    "%s: p50 %.2f ms (in-process %.2f), %.1f/s (in-process %.1f)",
                    model,
                    summary["p50_ms"],
                    reference["p50_ms"],
                    summary["throughput"],
                    reference["throughput"],
                )
            memory = {"tritonserver": rss_mib(triton.pid), "gateway": rss_mib(gateway.process.pid)}
            memory.update(
                {f"{STUB_PREFIX}{m}": rss_mib(pid, True) for m, pid in sorted(stubs.items())}
            )
    return {
        "models": results,
        "memory_mib": {k: round(v, 1) for k, v in memory.items()},
        "gateway_start_s": round(gateway_s, 3),
    }
