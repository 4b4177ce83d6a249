"""``lmforge rollout --demo``: the embedded Triton (explicit model control) and a gateway on
a ``minilm``-only repository, closed-loop Embed clients the whole time, and three rollouts: a
good version, a deliberately broken one caught on its canary, and the same one caught in a
shadow stage. Every client reply names the version that served it, so the share of traffic
per version at each stage is what the clients saw."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.rollout_demo_report import Record, client_shares, demo_markdown, windows
from lmforge_core.strict import validate
from rollout.engine import Rollout
from rollout.errors import RolloutError
from rollout.gateway_view import warm_texts
from rollout.plan import RolloutPlan
from rollout.report import RolloutReport
from rollout.triton_versions import version_dirs
from triton_models.runtime.contract import ENCODER_SUFFIX

logger = logging.getLogger(__name__)

DEMO_MODEL = "minilm"
#: appended to a copy of a good encoder's model.py: healthy for its first executions (it
#: passes the warm-up), then every execute raises, as a version that breaks under real
#: traffic would (the exception reaches Triton as a failed request)
BROKEN_PATCH = """

# -- lmforge rollout --demo: a deliberately broken version -----------------------------------
_HEALTHY_EXECUTES = {healthy}
_executes = 0
_good_execute = TritonPythonModel.execute


def _broken_execute(self, requests):
    global _executes
    _executes += 1
    if _executes > _HEALTHY_EXECUTES:
        raise RuntimeError("deliberately broken version: it fails every request after warm-up")
    return _good_execute(self, requests)


TritonPythonModel.execute = _broken_execute
"""


def broken_version(source: Path, target: Path, healthy_executes: int) -> Path:
    """A copy of the version folder ``source`` whose model fails after ``healthy_executes``."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    model = target / "model.py"
    model.write_text(
        model.read_text(encoding="utf-8") + BROKEN_PATCH.format(healthy=healthy_executes),
        encoding="utf-8",
    )
    return target


def build_demo_repository(target: Path, source: Path | None = None) -> Path:
    """A repository with the ``minilm`` embedder only, version 1: copied from a built
    repository ``source``, else built from the packaged all-MiniLM-L6-v2 weights."""
    if source is not None:
        target.mkdir(parents=True)
        for name in (DEMO_MODEL, DEMO_MODEL + "_tokenize", DEMO_MODEL + ENCODER_SUFFIX):
            shutil.copytree(
                source / name, target / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        return target
    from trainer.datasets import dataset_file
    from trainer.repository.builder import build_repository
    from trainer.repository.demo import minilm_checkpoint
    from trainer.repository.spec import parse_spec

    dev = dataset_file("sst2", "dev")
    spec = parse_spec(
        {
            "models": [
                {
                    "name": DEMO_MODEL,
                    "task": "embed",
                    "checkpoint": str(minilm_checkpoint()),
                    "target": "cpu",
                    "max_length": 128,
                    "max_batch_size": 32,
                    "dynamic_batching": {"max_queue_delay_us": 0},
                    "parity": {"dataset": {"path": str(dev), "column": "sentence", "limit": 16}},
                }
            ]
        }
    )
    return build_repository(spec, target).path


def demo_plan(
    gateway: Mapping[str, Any], triton_url: str, repository: Path, **overrides: Any
) -> RolloutPlan:
    """The demo's plan: quick stages, probes every 0.25 s."""
    data: dict[str, Any] = {
        "route": DEMO_MODEL,
        "dwell_s": 8.0,
        "checks": {"baseline_s": 6.0, "min_requests": 20, "max_latency_ratio": 2.0},
        "warmup": {"requests": 16},
        "probe": {"interval_s": 0.25, "timeout_s": 10.0},
        "gateway": {**gateway, "apply_timeout_s": 20.0, "drain_s": 1.0},
        "triton": {"url": triton_url, "repository": str(repository), "load_timeout_s": 120.0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return validate(RolloutPlan, data, source="demo", what="rollout plan", error=RolloutError)


async def rollout_under_load(
    plan: RolloutPlan, target: str, texts: Sequence[str], concurrency: int, lead_s: float = 2.0
) -> tuple[RolloutReport, list[dict[str, Any]], dict[str, Any]]:
    """Run ``plan`` (in a thread) while ``concurrency`` clients call Embed back to back
    (:func:`lmforge_client.loadgen.closed_loop`); every reply is recorded with the version that
    served it. Returns the report, what the clients saw per stage, and in total."""
    from lmforge_client.client import AsyncLmforgeClient
    from lmforge_client.loadgen import closed_loop
    from lmforge_client.types import LmforgeError

    records: list[Record] = []
    async with AsyncLmforgeClient(target, timeout=10.0) as client:

        async def call(index: int) -> object:
            try:
                reply = await client.embed(plan.route, [texts[index % len(texts)]])
            except LmforgeError as exc:
                records.append((time.monotonic(), "", exc.code.name))
                raise
            records.append((time.monotonic(), reply.served_by.triton_model_version, "OK"))
            return reply

        started = time.monotonic()
        load = asyncio.create_task(closed_loop(call, concurrency, duration=3600.0, warmup=0.0))
        await asyncio.sleep(lead_s)
        rollout = Rollout(plan)
        try:
            report = await asyncio.to_thread(rollout.run)
            await asyncio.sleep(lead_s)
        finally:
            rollout.stop.set()
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
        ended = time.monotonic()
    new_version = str(report.new["version"])
    stages = client_shares(
        records, windows(report, started, ended, plan.gateway.drain_s), new_version
    )
    total = client_shares(records, [("total", started, ended)], new_version)[0]
    return report, stages, total


def run_demo(
    out: Path | None,
    *,
    repository: Path | None = None,
    dwell_s: float = 8.0,
    concurrency: int = 4,
    scenarios: Sequence[str] = ("good", "bad-canary", "bad-shadow"),
) -> dict[str, Any]:
    """Triton (explicit model control) and a gateway on a ``minilm``-only repository, then,
    each under client load: ``good`` (version 2, the same weights, 1/10/50/100%),
    ``bad-canary`` (version 3 breaks after its warm-up: caught on the 1% canary) and
    ``bad-shadow`` (the same broken version behind a shadow stage first)."""
    from gateway.processes import gateway_config, start_gateway
    from triton_host.launcher import TritonServer

    began = time.monotonic()
    results: dict[str, Any] = {"scenarios": {}, "settings": {}}
    with tempfile.TemporaryDirectory(prefix="lmforge-rollout-") as tmp:
        work = Path(tmp)
        repo = build_demo_repository(work / "repository", repository)
        results["settings"]["repository_s"] = round(time.monotonic() - began, 1)
        texts = warm_texts(repo, DEMO_MODEL, 256)
        load_arg = f"--load-model={DEMO_MODEL}"
        with TritonServer(repo, model_control_mode="explicit", extra_args=[load_arg]) as triton:
            results["settings"]["triton_pid"] = triton.pid
            v1 = {"name": f"{DEMO_MODEL}-v1", "triton_model": DEMO_MODEL, "version": 1}
            config = gateway_config(
                triton.grpc_url, [{"name": DEMO_MODEL, "task": "embed", "deployments": [v1]}]
            )
            config["triton"]["repository"] = str(repo)
            config["server"]["reload_interval_s"] = 0.2
            with start_gateway(
                work / "gateway", config, wait_serving=True, log_level="WARNING"
            ) as gateway:
                target = {
                    "target": gateway.target,
                    "config": str(gateway.config_path),
                    "metrics_url": gateway.metrics_url,
                }

                baseline = {"baseline_s": max(3.0, 0.75 * dwell_s)}

                def plan(**overrides: Any) -> RolloutPlan:
                    return demo_plan(
                        target, triton.grpc_url, repo, dwell_s=dwell_s, checks=baseline, **overrides
                    )

                encoder = repo / (DEMO_MODEL + ENCODER_SUFFIX)
                broken = broken_version(encoder / "1", work / "broken", healthy_executes=16)
                plans = {
                    "good": plan(new_version=2),
                    "bad-canary": plan(new_version=3, source=str(broken)),
                    "bad-shadow": plan(
                        new_version=3,
                        source=str(broken),
                        stages=[{"shadow": 0.5}, 1, 10, 50, 100],
                    ),
                }
                for name in scenarios:
                    logger.info("rollout demo: scenario %s", name)
                    report, stages, total = asyncio.run(
                        rollout_under_load(plans[name], gateway.target, texts, concurrency)
                    )
                    results["scenarios"][name] = {
                        "outcome": report.outcome,
                        "reason": report.reason,
                        "client_total": total,
                        "client_stages": stages,
                        "rollout": report.as_dict(),
                    }
                results["triton_versions"] = {
                    model: version_dirs(repo / model)
                    for model in (DEMO_MODEL, DEMO_MODEL + ENCODER_SUFFIX)
                }
    results["settings"].update(
        dwell_s=dwell_s,
        concurrency=concurrency,
        seconds=round(time.monotonic() - began, 1),
        machine=f"{os.cpu_count()} CPUs",
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "rollout.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (out / "rollout.md").write_text(demo_markdown(results), encoding="utf-8")
    return results
