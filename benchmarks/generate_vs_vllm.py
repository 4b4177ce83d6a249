"""``lmforge bench generate``: lmforge's ``GenerateStream`` next to vLLM's own OpenAI-compatible
server, on the same model and machine, in one run.

lmforge is measured as ``lmforge up`` serves it: the demo repository (its ``smollm2`` model on
vLLM inside Triton, the shipped spec) behind the gateway with its shipped limits. vLLM is its
own server with its default settings (``python -m vllm.entrypoints.openai.api_server --model
<the same HF folder> --max-model-len <the same>``), from the same vLLM environment. One after
the other, never together (the machine's cores are shared).

Per system and number of streams (closed loop: each stream sends its next request when the
last one ended, for ``--duration`` seconds; greedy, ``--new-tokens`` per request, the same
prompts): tokens/s over the wall time, time to first token p50/p99, inter-token time p50 (the
gap between two streamed pieces of text, the same way for both), requests refused, and the resident memory of the serving
processes (lmforge: the generate model's stub and its vLLM processes; vLLM: its server and its
children). Writes ``generate_vs_vllm.{json,csv,md,png}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks import RESULTS
from benchmarks.generate_throughput import PROMPTS
from benchmarks.perf.procs import rss_mib
from lmforge_core.net import LOCALHOST, free_ports
from lmforge_core.stats import percentile

SAME_TEXT_PROMPT = "The capital of France is"  # both must decode the same greedy text
MODEL = "smollm2"
TARGET_TOKENS = 0.9  # lmforge tokens/s >= 0.9x vLLM's, at 1 and 8 streams
TARGET_TTFT = 1.2  # lmforge TTFT p50 <= 1.2x vLLM's
TARGET_SCALING = 5.0  # lmforge 8 streams >= 5x one stream


@dataclass
class Request:
    first_s: float
    total_s: float
    tokens: int
    gaps_s: list[float] = field(default_factory=list)  # between streamed pieces of text


@dataclass
class Point:
    system: str
    streams: int
    seconds: float
    requests: int
    refused: int
    tokens: int
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    rss_mib: float


Stream = Callable[[str, int], Awaitable[Request]]


async def closed_loop(stream: Stream, streams: int, seconds: float, new_tokens: int) -> Point:
    done: list[Request] = []
    refused = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal refused
        i = offset
        while time.perf_counter() < deadline:
            try:
                done.append(await stream(PROMPTS[i % len(PROMPTS)], new_tokens))
            except Exception:  # a refusal (RESOURCE_EXHAUSTED, 429) or another error
                refused += 1
                await asyncio.sleep(0.05)
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(streams)))
    wall = time.perf_counter() - started
    firsts = [r.first_s * 1000 for r in done]
    gaps = [g * 1000 for r in done for g in r.gaps_s]
    tokens = sum(r.tokens for r in done)
    return Point(
        system="",
        streams=streams,
        seconds=round(wall, 2),
        requests=len(done),
        refused=refused,
        tokens=tokens,
        tokens_per_s=round(tokens / wall, 2),
        ttft_p50_ms=round(percentile(firsts, 50) or 0.0, 1),
        ttft_p99_ms=round(percentile(firsts, 99) or 0.0, 1),
        itl_p50_ms=round(percentile(gaps, 50) or 0.0, 1),
        rss_mib=0.0,
    )


def _tree_rss(pid: int) -> float:
    return rss_mib(pid, children=True)


def _stub_pid(triton_pid: int, model: str) -> int | None:
    for proc in psutil.Process(triton_pid).children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any("triton_python_backend_stub" in part for part in cmdline) and any(
            f"/{model}/" in part or part.endswith(f"/{model}") for part in cmdline
        ):
            return proc.pid
    return None


# -- lmforge -----------------------------------------------------------------------------------


def _lmforge_stream(client: Any) -> Stream:
    async def stream(prompt: str, new_tokens: int) -> Request:
        started = time.perf_counter()
        first: float | None = None
        last = started
        tokens = 0
        gaps: list[float] = []
        async for chunk in client.generate_stream(MODEL, prompt, max_new_tokens=new_tokens):
            now = time.perf_counter()
            if chunk.text:
                if first is None:
                    first = now - started
                else:
                    gaps.append(now - last)
                last = now
            if chunk.usage is not None:
                tokens = chunk.usage.output_tokens
        total = time.perf_counter() - started
        return Request(first if first is not None else total, total, tokens, gaps)

    return stream


async def _measure(
    stream: Stream,
    levels: list[int],
    seconds: float,
    new_tokens: int,
    rss: Callable[[], float],
    system: str,
) -> list[Point]:
    await stream(PROMPTS[0], 8)  # warm-up
    points = []
    for streams in levels:
        point = await closed_loop(stream, streams, seconds, new_tokens)
        point.system = system
        point.rss_mib = round(rss(), 1)
        print(
            f"  {system:8s} {streams:2d} streams: {point.tokens_per_s:7.1f} tok/s, "
            f"TTFT p50 {point.ttft_p50_ms:.0f} ms, refused {point.refused}",
            flush=True,
        )
        points.append(point)
    return points


def lmforge_points(
    repository: Path, workdir: Path, levels: list[int], seconds: float, new_tokens: int
) -> tuple[list[Point], str]:
    from lmforge_client.client import AsyncLmforgeClient

    from gateway.processes import gateway_config, start_gateway
    from triton_host.launcher import TritonServer

    routes = [{"name": MODEL, "task": "generate", "triton_model": MODEL}]
    with TritonServer(repository) as triton:
        gateway = start_gateway(workdir / "gateway", gateway_config(triton.grpc_url, routes))
        try:
            triton_pid = triton.pid
            assert triton_pid is not None
            stub = _stub_pid(triton_pid, MODEL)

            def rss() -> float:
                return _tree_rss(stub) if stub is not None else 0.0

            async def run() -> tuple[list[Point], str]:
                async with AsyncLmforgeClient(gateway.target, timeout=600) as client:
                    await client.wait_for_health("SERVING", timeout=600)
                    stream = _lmforge_stream(client)
                    text = (
                        await client.generate(MODEL, PROMPTS[0], max_new_tokens=new_tokens)
                    ).text
                    return await _measure(stream, levels, seconds, new_tokens, rss, "lmforge"), text

            return asyncio.run(run())
        finally:
            gateway.stop()


# -- vLLM's own server -------------------------------------------------------------------------


def _vllm_stream(session: Any, url: str, folder: str) -> Stream:
    async def stream(prompt: str, new_tokens: int) -> Request:
        body = {
            "model": folder,
            "prompt": prompt,
            "max_tokens": new_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        first: float | None = None
        last = started
        tokens = 0
        gaps: list[float] = []
        async with session.post(f"{url}/v1/completions", json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"vLLM answered {response.status}: {await response.text()}")
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                now = time.perf_counter()
                event = json.loads(line[6:])
                text = "".join(c.get("text", "") for c in event.get("choices", []))
                if text:
                    if first is None:
                        first = now - started
                    else:
                        gaps.append(now - last)
                    last = now
                if event.get("usage"):
                    tokens = int(event["usage"]["completion_tokens"])
        total = time.perf_counter() - started
        return Request(first if first is not None else total, total, tokens, gaps)

    return stream


def vllm_points(
    vllm_env: Path,
    folder: Path,
    max_model_len: int,
    levels: list[int],
    seconds: float,
    new_tokens: int,
    log: Path,
) -> tuple[list[Point], str, float]:
    import aiohttp

    (port,) = free_ports(1)
    command = [
        str(vllm_env / "bin" / "python"),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(folder),
        "--max-model-len",
        str(max_model_len),
        "--host",
        LOCALHOST,
        "--port",
        str(port),
    ]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    started = time.perf_counter()
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://{LOCALHOST}:{port}"
    try:

        async def run() -> tuple[list[Point], str, float]:
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while True:
                    if server.poll() is not None:
                        raise RuntimeError(f"vLLM's server exited; see {log}")
                    try:
                        async with session.get(f"{url}/health") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(1)
                up = time.perf_counter() - started
                stream = _vllm_stream(session, url, str(folder))
                body = {
                    "model": str(folder),
                    "prompt": PROMPTS[0],
                    "max_tokens": new_tokens,
                    "temperature": 0.0,
                }
                async with session.post(f"{url}/v1/completions", json=body) as r:
                    text = (await r.json())["choices"][0]["text"]
                points = await _measure(
                    stream, levels, seconds, new_tokens, lambda: _tree_rss(server.pid), "vllm"
                )
                return points, text, up

        return asyncio.run(run())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


# -- report ------------------------------------------------------------------------------------


def ratios(points: list[Point]) -> dict[str, Any]:
    by = {(p.system, p.streams): p for p in points}
    out: dict[str, Any] = {}
    for streams in sorted({p.streams for p in points}):
        ours, theirs = by.get(("lmforge", streams)), by.get(("vllm", streams))
        if ours is None or theirs is None:
            continue
        out[f"tokens_per_s_{streams}"] = round(ours.tokens_per_s / theirs.tokens_per_s, 3)
        out[f"ttft_p50_{streams}"] = round(ours.ttft_p50_ms / theirs.ttft_p50_ms, 3)
    for system in ("lmforge", "vllm"):
        one, eight = by.get((system, 1)), by.get((system, 8))
        if one is not None and eight is not None and one.tokens_per_s:
            out[f"{system}_8_over_1"] = round(eight.tokens_per_s / one.tokens_per_s, 2)
    return out


def markdown(points: list[Point], summary: dict[str, Any], notes: list[str]) -> str:
    lines = [
        "| system | streams | tokens/s | TTFT p50 ms | TTFT p99 ms | inter-token p50 ms | "
        "requests | refused | RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {p.system} | {p.streams} | {p.tokens_per_s:.1f} | {p.ttft_p50_ms:.0f} | "
        f"{p.ttft_p99_ms:.0f} | {p.itl_p50_ms:.1f} | {p.requests} | {p.refused} | "
        f"{p.rss_mib:.0f} |"
        for p in points
    ]
    lines += ["", *notes, "", "Ratios (lmforge / vLLM): " + json.dumps(summary)]
    return "\n".join(lines) + "\n"


def plot(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for system in ("lmforge", "vllm"):
        mine = [p for p in points if p.system == system]
        axes[0].plot([p.streams for p in mine], [p.tokens_per_s for p in mine], "o-", label=system)
        axes[1].plot([p.streams for p in mine], [p.ttft_p50_ms for p in mine], "o-", label=system)
    axes[0].set(xlabel="streams", ylabel="tokens/s", title="throughput")
    axes[1].set(xlabel="streams", ylabel="ms", title="time to first token (p50)")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _demo_repository() -> Path:
    """The demo repository as ``lmforge up`` builds (or reuses) it."""
    from trainer.repository.demo_serving import build_demo_repository
    from trainer.settings import settings as settings_of_trainer

    repository = settings_of_trainer().cache / "demo-repository"
    build_demo_repository(repository)
    return repository


def run(args: argparse.Namespace) -> int:
    from trainer.repository.generate import EXECUTION_ENV_PATH
    from trainer.repository.pbtxt import read_parameters
    from triton_models.runtime import contract

    repository = Path(args.repository) if args.repository else _demo_repository()
    model_dir = repository / MODEL
    folder = model_dir / "1" / contract.GENERATE_MODEL_DIR
    params = read_parameters(model_dir / "config.pbtxt")
    if params.get(contract.PARAM_ENGINE) != contract.ENGINE_VLLM:
        print(
            f"{model_dir} is not served by vLLM ({contract.PARAM_ENGINE}); rebuild it",
            file=sys.stderr,
        )
        return 2
    given = args.vllm_env or params.get(EXECUTION_ENV_PATH)
    if not given:
        print("no vLLM environment: pass --vllm-env", file=sys.stderr)
        return 2
    vllm_env = Path(given)
    max_model_len = int(params[contract.PARAM_MAX_LENGTH]) + int(
        params[contract.PARAM_MAX_NEW_TOKENS]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"lmforge: {repository} ({MODEL} on vLLM inside Triton, behind the gateway)", flush=True)
    ours: list[Point] = []
    theirs: list[Point] = []
    our_text = their_text = ""
    their_start = 0.0
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-generate-") as tmp:
        if "lmforge" in args.systems:
            ours, our_text = lmforge_points(
                repository, Path(tmp), args.streams, args.duration, args.new_tokens
            )
        if "vllm" in args.systems:
            print(
                f"vLLM's own server on {folder} (default settings, max-model-len {max_model_len})",
                flush=True,
            )
            theirs, their_text, their_start = vllm_points(
                vllm_env,
                folder,
                max_model_len,
                args.streams,
                args.duration,
                args.new_tokens,
                out / "generate_vs_vllm.vllm.log",
            )
    points = ours + theirs
    summary = ratios(points)
    notes = [
        f"Greedy, {args.new_tokens} new tokens, closed loop {args.duration:.0f} s per point, "
        "the same 8 prompts.",
        f"Same greedy text for {SAME_TEXT_PROMPT!r}: {'yes' if our_text == their_text else 'no'} "
        f"(lmforge {our_text[:60]!r}; vLLM {their_text[:60]!r}).",
        f"vLLM's server start-up: {their_start:.0f} s.",
    ]
    checks = {
        "tokens_1": summary.get("tokens_per_s_1", 0) >= TARGET_TOKENS,
        "tokens_8": summary.get("tokens_per_s_8", 0) >= TARGET_TOKENS,
        "ttft_1": summary.get("ttft_p50_1", 99) <= TARGET_TTFT,
        "scaling_8": summary.get("lmforge_8_over_1", 0) >= TARGET_SCALING,
        "no_refusal_at_8": all(p.refused == 0 for p in ours if p.streams <= 8),
    }
    notes.append(
        "Targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in checks.items())
    )
    text = markdown(points, summary, notes)
    (out / "generate_vs_vllm.md").write_text(text)
    (out / "generate_vs_vllm.json").write_text(
        json.dumps(
            {
                "points": [asdict(p) for p in points],
                "ratios": summary,
                "checks": checks,
                "notes": notes,
            },
            indent=1,
        )
    )
    if not points:
        return 1
    with (out / "generate_vs_vllm.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(points[0])))
        writer.writeheader()
        writer.writerows(asdict(p) for p in points)
    plot(points, out / "generate_vs_vllm.png")
    print(text)
    print(f"results in {out}/generate_vs_vllm.{{json,csv,md,png}}")
    return 0


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "generate", help="GenerateStream vs vLLM's own OpenAI-compatible server, same model"
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per point")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repository", help="default: the demo repository lmforge up serves")
    parser.add_argument("--vllm-env", help="default: the generate model's EXECUTION_ENV_PATH")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=["lmforge", "vllm"],
        default=["lmforge", "vllm"],
        help="measure only some (tuning runs; the ratios need both)",
    )
    parser.add_argument("--out", default=str(RESULTS))
    parser.set_defaults(handler=run)
