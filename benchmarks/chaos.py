"""``lmforge bench chaos``: the gateway's behaviour under overload, a Triton crash, a key
rotation and hostile requests, measured on real Triton with the real demo models.

One tritonserver (supervised: restarted with back-off on the same ports) and one gateway
process (API keys on, Embed of real SST-2 sentences on all-MiniLM-L6-v2), then:

1. **baseline**: open loop at a low rate → the unloaded p50/p99;
2. **capacity**: closed loop → the sustainable rate; admission stays as the shipped defaults
   set it (``--size-admission`` instead sizes the queue to the measured rate through a config
   reload, the way this drill did before admission derived its own budget);
3. **overload**: open loop at 10x that rate → admitted p99 vs unloaded p99, rejected share and
   how fast rejections come back;
4. **chaos**: steady load; tritonserver is SIGKILLed; every request must be answered (OK or a
   status) within its deadline: none hung, none lost; health must turn NOT_SERVING; after the
   supervisor brought Triton back, the time to the first OK answer is the recovery time; the
   dead server's stubs and shared-memory regions must be gone;
5. **key rotation**: load on two keys; one is replaced by a config edit (SIGHUP): the key that
   stays valid must see no failure;
6. **fuzz**: ``--fuzz`` hostile requests (:mod:`benchmarks.fuzz`): none INTERNAL or hung; the
   gateway's memory before and after, and it still serves.

Writes ``chaos.json`` and ``chaos.md`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lmforge_client.client import AsyncLmforgeClient
from lmforge_client.loadgen import LoadResult, closed_loop, open_loop
from lmforge_client.types import LmforgeError

from benchmarks import RESULTS
from benchmarks.fuzz import fuzz
from benchmarks.perf.procs import rss_mib
from gateway.admission import max_queued_for
from gateway.auth import hash_key
from gateway.processes import GatewayProcess, gateway_config, start_gateway
from lmforge_core.stats import percentile, rounded

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "minilm"
KEYS = {"steady": "chaos-steady-key", "rotating": "chaos-rotating-key-1"}
NEW_ROTATING = "chaos-rotating-key-2"
TIMEOUT_S = 5.0


@dataclass
class Tracker:
    """Every call of a phase: when it started and ended, and how it was answered."""

    events: list[tuple[float, float, str]] = field(default_factory=list)

    def wrap(self, call: Callable[[int], Any]) -> Callable[[int], Any]:
        async def tracked(index: int) -> object:
            began = time.monotonic()
            try:
                result = await call(index)
            except LmforgeError as exc:
                self.events.append((began, time.monotonic(), exc.code.name))
                raise
            except BaseException:
                self.events.append((began, time.monotonic(), "LOST"))
                raise
            self.events.append((began, time.monotonic(), "OK"))
            return result

        return tracked

    def codes(self) -> dict[str, int]:
        return dict(Counter(code for _, _, code in self.events))


def _reconfigure(gateway: GatewayProcess, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(gateway.config_path.read_text(encoding="utf-8"))
    change(data)
    gateway.config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    gateway.process.send_signal(signal.SIGHUP)
    time.sleep(0.5)


def _summary(result: LoadResult) -> dict[str, Any]:
    data = result.summary()
    data.pop("mode", None)
    return data


async def _client_call(
    target: str, key: str, batches: list[list[str]]
) -> tuple[AsyncLmforgeClient, Callable[[int], Any]]:
    client = AsyncLmforgeClient(target, timeout=TIMEOUT_S, api_key=key)

    async def call(index: int) -> object:
        return await client.embed(MODEL, batches[index % len(batches)])

    return client, call


async def _load_phases(
    gateway: GatewayProcess, batches: list[list[str]], args: argparse.Namespace
) -> dict[str, Any]:
    client, call = await _client_call(gateway.target, KEYS["steady"], batches)
    async with client:
        await client.wait_for_health("SERVING", timeout=120)
        await closed_loop(call, 4, 2.0, warmup=0.5)  # warm up tokenizer, batcher, Triton
        capacity = await closed_loop(call, args.concurrency, args.seconds, warmup=1.0)
        rate = capacity.throughput
        baseline = await open_loop(call, max(1.0, rate * 0.1), args.seconds, grace=TIMEOUT_S)
        budget_s = baseline.percentile(99) / 1000
        queued: int | None = None
        if args.size_admission:
            queued = max_queued_for(budget_s, rate * args.inputs, floor=args.inputs)
            _reconfigure(gateway, lambda d: d["batching"].update(max_queued_inputs=queued))
        overload_tracker = Tracker()
        overload = await open_loop(
            overload_tracker.wrap(call), rate * 10, args.seconds, grace=TIMEOUT_S
        )
    rejected = [e for e in overload_tracker.events if e[2] == "RESOURCE_EXHAUSTED"]
    rejected_ms = [(end - began) * 1000 for began, end, _ in rejected]
    sent = overload.ok + sum(overload.failed.values())
    return {
        "capacity": {**_summary(capacity), "requests_per_s": round(rate, 2)},
        "baseline": _summary(baseline),
        "admission": {
            "sized_by_reload": queued is not None,
            "queue_budget_ms": round(budget_s * 1000, 2) if queued is not None else None,
            "max_queued_inputs": queued,
        },
        "overload": {
            **_summary(overload),
            "offered_per_s": round(rate * 10, 1),
            "admitted_p99_ms": round(overload.percentile(99), 2),
            "unloaded_p99_ms": round(baseline.percentile(99), 2),
            "p99_ratio": round(overload.percentile(99) / baseline.percentile(99), 2),
            "rejected_share": round(len(rejected) / sent, 3) if sent else 0.0,
            "rejected_p99_ms": rounded(percentile(rejected_ms, 99)),
        },
    }


async def _watch_health(target: str, seen: list[tuple[float, str]], stop: asyncio.Event) -> None:
    async with AsyncLmforgeClient(target, timeout=1.0) as client:
        while not stop.is_set():
            try:
                status = await client.health()
            except LmforgeError as exc:
                status = exc.code.name
            seen.append((time.monotonic(), status))
            await asyncio.sleep(0.1)


async def _chaos_phase(
    gateway: GatewayProcess,
    triton: Any,
    restarted: list[float],
    batches: list[list[str]],
    rate: float,
) -> dict[str, Any]:
    from triton_host.launcher import SHM_DIR, group_members

    tracker = Tracker()
    health: list[tuple[float, str]] = []
    stop = asyncio.Event()
    client, call = await _client_call(gateway.target, KEYS["steady"], batches)
    async with client:
        watcher = asyncio.create_task(_watch_health(gateway.target, health, stop))
        pid, prefix = triton.pid, triton.shm_prefix
        load = asyncio.create_task(open_loop(tracker.wrap(call), rate, 20.0, grace=TIMEOUT_S + 5))
        await asyncio.sleep(4.0)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        result = await load
        stop.set()
        await watcher
    back = next((t for t in restarted if t > killed_at), None)
    first_ok = next(
        (end for began, end, code in sorted(tracker.events, key=lambda e: e[1])
         if code == "OK" and back is not None and end > back),
        None,
    )  # fmt: skip
    serving_again = next(
        (t for t, s in health if back is not None and t > back and s == "SERVING"), None
    )
    answered = sum(1 for _, _, code in tracker.events if code != "LOST")
    sent = int(result.level * result.seconds)
    slowest = max((end - began for began, end, _ in tracker.events), default=0.0)
    return {
        "requests_sent": sent,
        "answered": answered,
        "codes": tracker.codes(),
        "hung": result.hung,
        "lost": sent - answered - result.hung,
        "slowest_answer_s": round(slowest, 3),
        "deadline_s": TIMEOUT_S,
        "not_serving_seen": any(s == "NOT_SERVING" for t, s in health if t > killed_at),
        "triton_back_after_kill_s": round(back - killed_at, 2) if back else None,
        "recovery_s": round(first_ok - back, 3) if back and first_ok else None,
        "health_serving_after_s": round(serving_again - back, 3)
        if back and serving_again
        else None,
        "stubs_left": len(group_members(pid)),
        "shm_regions_left": len(list(SHM_DIR.glob(f"{prefix}*"))) if prefix else 0,
    }


async def _rotation_phase(gateway: GatewayProcess, batches: list[list[str]]) -> dict[str, Any]:
    steady = Tracker()
    # this phase is about keys, not admission: give the queue room again first
    await asyncio.to_thread(
        _reconfigure, gateway, lambda d: d["batching"].update(max_queued_inputs=1024)
    )
    client, call = await _client_call(gateway.target, KEYS["steady"], batches)
    async with client:
        load = asyncio.create_task(closed_loop(steady.wrap(call), 4, 6.0, warmup=0.0))
        await asyncio.sleep(2.0)

        def rotate(data: dict[str, Any]) -> None:
            for key in data["auth"]["keys"]:
                if key["name"] == "rotating":
                    key["sha256"] = hash_key(NEW_ROTATING)

        await asyncio.to_thread(_reconfigure, gateway, rotate)
        codes = {}
        for name, secret in (("old_key", KEYS["rotating"]), ("new_key", NEW_ROTATING)):
            async with AsyncLmforgeClient(gateway.target, timeout=TIMEOUT_S, api_key=secret) as c:
                try:
                    await c.embed(MODEL, batches[0])
                    codes[name] = "OK"
                except LmforgeError as exc:
                    codes[name] = exc.code.name
        await load
    steady_codes = steady.codes()
    return {
        "steady_key_requests": sum(steady_codes.values()),
        "steady_key_failed": sum(v for k, v in steady_codes.items() if k != "OK"),
        "old_key_after_rotation": codes["old_key"],
        "new_key_after_rotation": codes["new_key"],
    }


def _markdown(report: dict[str, Any]) -> str:
    o, c, r, f = report["overload"], report["chaos"], report["rotation"], report["fuzz"]
    rows = [
        ("sustainable rate (closed loop)", f"{report['capacity']['requests_per_s']} req/s"),
        ("unloaded p50 / p99", f"{report['baseline']['p50_ms']} / {o['unloaded_p99_ms']} ms"),
        ("admission", f"sized by reload: max_queued_inputs={report['admission']['max_queued_inputs']}" if report["admission"]["sized_by_reload"] else "the shipped defaults"),
        ("overload: offered", f"{o['offered_per_s']} req/s (10x)"),
        ("overload: admitted p99", f"{o['admitted_p99_ms']} ms = {o['p99_ratio']}x unloaded p99"),
        ("overload: rejected share / rejection p99", f"{o['rejected_share']:.1%} / {o['rejected_p99_ms']} ms"),
        ("chaos: requests sent", str(c["requests_sent"])),
        ("chaos: answered, by status", ", ".join(f"{k} {v}" for k, v in sorted(c["codes"].items()))),
        ("chaos: hung / lost", f"{c['hung']} / {c['lost']}"),
        ("chaos: slowest answer (deadline)", f"{c['slowest_answer_s']} s ({c['deadline_s']} s)"),
        ("chaos: NOT_SERVING seen", str(c["not_serving_seen"])),
        ("chaos: Triton back after the kill", f"{c['triton_back_after_kill_s']} s (supervisor)"),
        ("chaos: recovery (first OK after Triton ready)", f"{c['recovery_s']} s"),
        ("chaos: stubs / shm regions left", f"{c['stubs_left']} / {c['shm_regions_left']}"),
        ("rotation: steady key requests / failed", f"{r['steady_key_requests']} / {r['steady_key_failed']}"),
        ("rotation: old key / new key after", f"{r['old_key_after_rotation']} / {r['new_key_after_rotation']}"),
        ("fuzz: requests / INTERNAL / hung", f"{f['sent']} / {f['internal']} / {f['hung']}"),
        ("fuzz: statuses", ", ".join(f"{k} {v}" for k, v in sorted(f["codes"].items()))),
        ("fuzz: gateway RSS before / after", f"{f['rss_before_mib']} / {f['rss_after_mib']} MiB"),
    ]  # fmt: skip
    lines = ["| measure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    from trainer.datasets import dataset_file, read_column
    from triton_host.launcher import TritonServer
    from triton_host.supervisor import RestartPolicy, TritonSupervisor

    sentences = read_column(dataset_file("sst2", "dev"), "sentence")
    batches = [sentences[i : i + args.inputs] for i in range(0, len(sentences) - args.inputs, 7)]
    with tempfile.TemporaryDirectory(prefix="lmforge-chaos-") as tmp:
        workdir = Path(tmp)
        repository = Path(args.repository) if args.repository else workdir / "repository"
        if not args.repository:
            command = [sys.executable, "-m", "lmforge", "repo", "demo", "--out", str(repository)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        restarted: list[float] = []
        with (
            TritonServer(repository) as triton,
            TritonSupervisor(
                triton,
                RestartPolicy(initial_backoff_s=1.0, poll_interval_s=0.2),
                on_restart=lambda _n: restarted.append(time.monotonic()),
            ),
        ):
            config = gateway_config(
                triton.grpc_url, [{"name": MODEL, "task": "embed", "triton_model": MODEL}]
            )
            config["triton"]["repository"] = str(repository)
            config["server"].update(reload_interval_s=0)
            config["limits"].update(max_inputs_per_request=args.inputs)
            config["batching"] = {"max_batch_size": 16, "max_queued_inputs": 1024}
            config["auth"] = {"keys": [{"name": n, "sha256": hash_key(k)} for n, k in KEYS.items()]}
            with start_gateway(workdir / "gateway", config, log_level="WARNING") as gateway:
                report: dict[str, Any] = asyncio.run(_load_phases(gateway, batches, args))
                rate = report["capacity"]["requests_per_s"] * 0.5
                logger.info("chaos phase at %.1f req/s", rate)
                report["chaos"] = asyncio.run(
                    _chaos_phase(gateway, triton, restarted, batches, rate)
                )
                report["rotation"] = asyncio.run(_rotation_phase(gateway, batches))
                before = rss_mib(gateway.process.pid)
                result = asyncio.run(
                    fuzz(gateway.target, args.fuzz, [MODEL], seed=args.seed, api_key=KEYS["steady"])
                )
                report["fuzz"] = {
                    "sent": result.sent,
                    "internal": result.internal,
                    "hung": result.hung,
                    "codes": dict(result.codes),
                    "seconds": round(result.seconds, 1),
                    "failures": result.failures[:20],
                    "rss_before_mib": round(before, 1),
                    "rss_after_mib": round(rss_mib(gateway.process.pid), 1),
                    "gateway_alive": gateway.process.poll() is None,
                }
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    report["inputs_per_request"] = args.inputs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = _markdown(report)
    (out / "chaos.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"results in {out}/chaos.{{json,md}}")
    return 0


def register_chaos(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``chaos`` to the subcommands of ``lmforge bench``."""
    parser = actions.add_parser(
        "chaos", help="overload, Triton crash, key rotation and fuzzing through the gateway"
    )
    parser.add_argument("--repository", default=None, help="a built demo repository to reuse")
    parser.add_argument("--inputs", type=int, default=4, help="sentences per request")
    parser.add_argument("--concurrency", type=int, default=8, help="capacity probe workers")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each load phase")
    parser.add_argument("--fuzz", type=int, default=10_000, help="fuzzed requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size-admission",
        action="store_true",
        help="size the queue to the measured rate by a config reload (default: shipped defaults)",
    )
    parser.add_argument("--out", default=str(RESULTS))
    parser.set_defaults(handler=_run)
