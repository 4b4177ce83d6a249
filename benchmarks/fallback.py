"""``lmforge bench fallback``: two Triton servers behind one gateway, one SIGKILLed under load,
measured on real Triton with the real all-MiniLM-L6-v2 embedder.

Two separate ``tritonserver`` processes (unsupervised: the killed one stays dead) serve the
demo repository's ``minilm`` models (``minilm``, ``minilm_tokenize``, ``minilm_encoder``,
loaded explicitly; the other demo models play no part in the drill). One gateway process
routes the logical model ``minilm`` over two deployments, ``a`` on the first server (the
``default`` endpoint) and ``b`` on the second (endpoint ``b``), split 50/50, fallback on, a
circuit breaker per deployment. Then:

1. **warm-up**: closed loop (not counted) so both deployments have their tokenizer, batcher
   and channel ready;
2. **load**: closed loop of single-sentence Embed calls (SST-2 dev sentences) at
   ``--concurrency``, ``--before`` seconds;
3. **kill**: the process group of one server (``--kill``, tritonserver and its python-backend
   stubs) is SIGKILLed while the load goes on for ``--after`` more seconds.

Every call is recorded, the gateway's routing metrics are scraped every 100 ms, and the
servers are watched; :mod:`benchmarks.fallback_report` turns that into the report. The must-show:
**killing one server under load loses no call that had a live alternative**. After the
gateway and both servers are stopped, what either server left behind (processes of its
group, shared-memory regions) is counted.

Writes ``fallback.json`` and ``fallback.md`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge_client.client import AsyncLmforgeClient
from lmforge_client.loadgen import closed_loop

from benchmarks import RESULTS
from benchmarks.fallback_report import Ledger, Recording, Scrape, markdown, parse_metrics, report
from gateway.processes import GatewayProcess, gateway_config, start_gateway
from trainer.repository.demo_serving import build_demo_repository
from triton_host.launcher import SHM_DIR, TritonServer, group_members, kill_group

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "minilm"
#: deployment name -> gateway endpoint name; ``default`` is the config's ``triton`` section
ENDPOINTS = {"a": "default", "b": "b"}
#: what each server loads: the ensemble, its tokenizer and the encoder the gateway calls
TRITON_MODELS = (MODEL, f"{MODEL}_tokenize", f"{MODEL}_encoder")
TIMEOUT_S = 10.0
SCRAPE_INTERVAL_S = 0.1
WATCH_INTERVAL_S = 0.02


def scrape(url: str) -> Scrape:
    """Read the gateway's ``/metrics`` now."""
    with urllib.request.urlopen(url, timeout=2.0) as response:
        text = response.read().decode("utf-8")
    return parse_metrics(text, MODEL, time.monotonic())


async def _watch_metrics(url: str, seen: list[Scrape], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            seen.append(await asyncio.to_thread(scrape, url))
        await asyncio.sleep(SCRAPE_INTERVAL_S)


async def _watch_servers(
    servers: Mapping[str, TritonServer], died: dict[str, float], stop: asyncio.Event
) -> None:
    """When each server stopped running (monotonic), as seen every 20 ms."""
    while not stop.is_set():
        for name, server in servers.items():
            if name not in died and not server.is_running():
                died[name] = time.monotonic()
        await asyncio.sleep(WATCH_INTERVAL_S)


async def _drill(
    gateway: GatewayProcess,
    servers: Mapping[str, TritonServer],
    sentences: Sequence[str],
    args: argparse.Namespace,
) -> Recording:
    ledger = Ledger()
    seen: list[Scrape] = []
    died: dict[str, float] = {}
    stop = asyncio.Event()
    victim_pid = servers[args.kill].pid
    if victim_pid is None:
        raise RuntimeError(f"the server of deployment {args.kill!r} was not started")
    async with AsyncLmforgeClient(gateway.target, timeout=TIMEOUT_S) as client:

        async def call(index: int) -> object:
            return await client.embed(MODEL, [sentences[index % len(sentences)]])

        await client.wait_for_health("SERVING", timeout=120)
        logger.info("warm-up: %.0f s at concurrency %d", args.warmup, args.concurrency)
        await closed_loop(call, args.concurrency, args.warmup, warmup=0.0)
        watchers = [
            asyncio.create_task(_watch_metrics(gateway.metrics_url, seen, stop)),
            asyncio.create_task(_watch_servers(servers, died, stop)),
        ]
        started = await asyncio.to_thread(scrape, gateway.metrics_url)
        load = asyncio.create_task(
            closed_loop(ledger.wrap(call), args.concurrency, args.before + args.after, warmup=0.0)
        )
        logger.info("load: %.0f s, then deployment %r is killed", args.before, args.kill)
        await asyncio.sleep(args.before)
        members = await asyncio.to_thread(group_members, victim_pid)
        at_kill = await asyncio.to_thread(scrape, gateway.metrics_url)
        killed_at, killed_wall = time.monotonic(), time.time()
        os.killpg(victim_pid, signal.SIGKILL)  # tritonserver and its stubs at once
        died[args.kill] = killed_at  # the watcher would see it a few ms later
        logger.info("killed %d processes; load goes on for %.0f s", len(members), args.after)
        await asyncio.to_thread(kill_group, victim_pid)  # until the whole group is gone
        await load
        load_stopped = started.at + args.before + args.after
        ended = await asyncio.to_thread(scrape, gateway.metrics_url)
        stop.set()
        await asyncio.gather(*watchers)
        health = await client.health()
    return Recording(
        route=MODEL,
        deployments=tuple(ENDPOINTS),
        victim=args.kill,
        calls=ledger.calls,
        started=started,
        at_kill=at_kill,
        ended=ended,
        seen=seen,
        died=died,
        killed_at=killed_at,
        killed_wall=killed_wall,
        load_stopped=load_stopped,
        killed_processes=len(members),
        gateway_log=gateway.log(),
        health_after=health,
    )


def _gateway_config(
    servers: Mapping[str, TritonServer], repository: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One route over both servers: split 50/50, fallback on, a breaker per deployment."""
    route = {
        "name": MODEL,
        "task": "embed",
        "deployments": [
            {"name": name, "triton_model": MODEL, "endpoint": endpoint}
            for name, endpoint in ENDPOINTS.items()
        ],
        "split": dict.fromkeys(ENDPOINTS, 50),
        "fallback": True,
        "breaker": {"failures": args.breaker_failures, "open_seconds": args.breaker_open_s},
    }
    default = next(name for name, endpoint in ENDPOINTS.items() if endpoint == "default")
    config = gateway_config(servers[default].grpc_url, [route])
    config["triton"]["repository"] = str(repository)
    config["endpoints"] = {
        endpoint: {"url": servers[name].grpc_url, "repository": str(repository)}
        for name, endpoint in ENDPOINTS.items()
        if endpoint != "default"
    }
    config["server"]["reload_interval_s"] = 0
    return config


def drill(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build (or reuse) the repository, start both servers and the gateway, run the drill,
    stop everything; the report, with what each server left behind."""
    from trainer.datasets import dataset_file, read_column

    sentences = read_column(dataset_file("sst2", "dev"), "sentence")
    repository = Path(args.repository) if args.repository else workdir / "repository"
    if not args.repository:
        build_demo_repository(repository)
    servers: dict[str, TritonServer] = {}
    with contextlib.ExitStack() as stack:
        for name in ENDPOINTS:  # both start at once, then both must become ready
            server = TritonServer(
                repository,
                model_control_mode="explicit",
                extra_args=[f"--load-model={m}" for m in TRITON_MODELS],
            )
            stack.callback(server.stop)
            servers[name] = server.start()
        for server in servers.values():
            server.wait_ready()
        identities = {n: (s.pid, s.shm_prefix) for n, s in servers.items()}
        config = _gateway_config(servers, repository, args)
        with start_gateway(workdir / "gateway", config, log_level="WARNING") as gateway:
            result = report(asyncio.run(_drill(gateway, servers, sentences, args)))
            warnings = [line for line in gateway.log().splitlines() if " WARNING " in line]
    result["left_behind"] = {
        name: {
            "processes": len(group_members(pid)) if pid is not None else 0,
            "shm_regions": len(list(SHM_DIR.glob(f"{prefix}*"))) if prefix else 0,
        }
        for name, (pid, prefix) in identities.items()
    }
    result["gateway_warnings"] = {"count": len(warnings), "first": warnings[:10]}
    result["setup"] = {
        "deployments": {n: f"{MODEL} on Triton endpoint {e!r}" for n, e in ENDPOINTS.items()},
        "split": dict.fromkeys(ENDPOINTS, 50),
        "fallback": True,
        "breaker": {"failures": args.breaker_failures, "open_seconds": args.breaker_open_s},
        "concurrency": args.concurrency,
        "inputs_per_request": 1,
        "warmup_s": args.warmup,
        "load_before_kill_s": args.before,
        "load_after_kill_s": args.after,
        "client_timeout_s": TIMEOUT_S,
        "triton_models_loaded": list(TRITON_MODELS),
    }
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    return result


def _run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="lmforge-fallback-") as tmp:
        result = drill(args, Path(tmp))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fallback.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = markdown(result)
    (out / "fallback.md").write_text(table, encoding="utf-8")
    print(table)
    print(f"results in {out}/fallback.{{json,md}}")
    return 0 if result["must_show"]["held"] else 1


def register_fallback(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fallback`` to the subcommands of ``lmforge bench``."""
    parser = actions.add_parser(
        "fallback", help="two Tritons behind one gateway route; SIGKILL one under load"
    )
    parser.add_argument("--repository", default=None, help="a built demo repository to reuse")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop workers")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, not counted")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of load before kill")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of load after kill")
    parser.add_argument("--kill", choices=sorted(ENDPOINTS), default="a", help="deployment")
    parser.add_argument("--breaker-failures", type=int, default=5)
    parser.add_argument("--breaker-open-s", type=float, default=5.0)
    parser.add_argument("--out", default=str(RESULTS))
    parser.set_defaults(handler=_run)
