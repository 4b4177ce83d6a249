"""Single-sentence Embed over HTTP (``POST /v1/embeddings``) against gRPC (``Embed``), one run.

    python -m benchmarks.http_vs_grpc [--repository DIR] [--concurrency 16] [--seconds 8]

One tritonserver on the demo repository and one gateway with both ports; closed loops of
``--concurrency`` callers, one sentence a request, gRPC and HTTP interleaved ``--rounds`` times
(the machine is shared: read the ratio, measured side by side). HTTP is driven by aiohttp, a
client this project did not write. Writes ``http_vs_grpc.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from lmforge_client.client import AsyncLmforgeClient
from lmforge_client.loadgen import closed_loop

from benchmarks import RESULTS
from gateway.processes import gateway_config, start_gateway
from lmforge_core.net import free_ports

MODEL = "minilm"


async def _measure(
    target: str, http_port: int, sentences: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=2 * args.concurrency)
    base = f"http://127.0.0.1:{http_port}"
    async with (
        AsyncLmforgeClient(target, timeout=10.0) as client,
        aiohttp.ClientSession(base_url=base, connector=connector) as http,
    ):
        await client.wait_for_health("SERVING", timeout=120)

        async def grpc_call(i: int) -> object:
            return await client.embed(MODEL, [sentences[i % len(sentences)]])

        async def http_call(i: int) -> object:
            body = {"model": MODEL, "input": sentences[i % len(sentences)]}
            async with http.post("/v1/embeddings", json=body) as response:
                response.raise_for_status()
                return await response.json()

        calls = {"grpc": grpc_call, "http": http_call}
        for call in calls.values():  # warm both paths up
            await closed_loop(call, args.concurrency, 2.0, warmup=0.5)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                result = await closed_loop(call, args.concurrency, args.seconds, warmup=1.0)
                runs[name].append(result.summary())
    mean = {n: sum(r["throughput"] for r in rs) / len(rs) for n, rs in runs.items()}
    return {
        "concurrency": args.concurrency,
        "runs": runs,
        "grpc_per_s": round(mean["grpc"], 1),
        "http_per_s": round(mean["http"], 1),
        "http_over_grpc": round(mean["http"] / mean["grpc"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    from trainer.datasets import dataset_file, read_column
    from trainer.repository.demo_serving import build_demo_repository
    from triton_host.launcher import TritonServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=None, help="a built demo repository")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0, help="per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sentences = read_column(dataset_file("sst2", "dev"), "sentence")
    with tempfile.TemporaryDirectory(prefix="lmforge-http-") as tmp:
        repository = args.repository or Path(tmp) / "repository"
        if args.repository is None:
            build_demo_repository(repository)
        with TritonServer(repository) as triton:
            config = gateway_config(
                triton.grpc_url, [{"name": MODEL, "task": "embed", "triton_model": MODEL}]
            )
            config["triton"]["repository"] = str(repository)
            (http_port,) = free_ports(1)
            config["server"]["http_port"] = http_port
            with start_gateway(Path(tmp) / "gateway", config, log_level="WARNING") as gateway:
                report = asyncio.run(_measure(gateway.target, http_port, sentences, args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http_vs_grpc.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"c={args.concurrency}, one sentence: gRPC {report['grpc_per_s']}/s, "
        f"HTTP {report['http_per_s']}/s, HTTP/gRPC = {report['http_over_grpc']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
