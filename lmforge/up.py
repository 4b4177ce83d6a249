"""``lmforge up``: the embedded default, one command from nothing to a served API.

Builds the demo model repository (real all-MiniLM-L6-v2 embeddings, a sentiment
classifier fine-tuned on SST-2 and SmolLM2-135M-Instruct generating text; all cached after the
first run), starts the ``tritonserver``
bundled in the nvidia-pytriton wheel on it, starts the gateway in front of it, makes one
real call of each kind, prints how to make them yourself, and serves until SIGINT/SIGTERM.
Triton is supervised (:mod:`triton_host.supervisor`): when it dies it is restarted with
back-off on the same ports (the gateway reconnects by itself, its health NOT_SERVING meanwhile);
after repeated failures ``lmforge up`` gives up loudly and exits with an error.

The repository is built in a child process (``lmforge repo demo``), so the serving process
never imports the training stack. This module is wiring only: the repository builder, the
Triton launcher and the gateway each live in their own package.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from lmforge_client.client import AsyncLmforgeClient

from gateway.config import GatewayConfig
from gateway.server import GatewayServer, serve
from gateway.settings import Settings
from trainer.repository.demo_serving import DEMO_MODELS, build_demo_repository
from trainer.settings import settings as settings_of_trainer

logger = logging.getLogger(__name__)

#: the OpenAI-compatible HTTP API of ``lmforge up`` (docs/openai.md)
DEMO_HTTP_PORT = 8080


def demo_config(
    triton_url: str,
    repository: Path,
    port: int,
    metrics_port: int | None,
    http_port: int | None = DEMO_HTTP_PORT,
) -> GatewayConfig:
    """The gateway in front of the embedded Triton; it reads the same repository, so it
    tokenizes itself and calls each model's encoder directly. The OpenAI-compatible HTTP API
    is on ``http_port`` (None: off)."""
    server = {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port}
    return GatewayConfig.from_mapping(
        {
            "server": {**server, "http_port": http_port},
            "triton": {"url": triton_url, "repository": str(repository)},
            "models": list(DEMO_MODELS),
        },
        source="lmforge up",
    )


def _cli_path() -> str:
    """How to run ``lmforge`` from the current folder (the venv's script, if not on PATH)."""
    script = Path(sys.executable).parent / "lmforge"
    if shutil.which("lmforge") == str(script) or not script.exists():
        return "lmforge"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


async def _show_calls(target: str) -> None:
    async with AsyncLmforgeClient(target) as client:
        await client.wait_for_health("SERVING", timeout=120.0)
        sentiment = await client.classify(
            "sentiment", ["a gorgeous, witty, seductive movie.", "the plot is dull and slow."]
        )
        embedded = await client.embed("minilm", ["lmforge serves typed gRPC APIs."])
        generated = await client.generate("smollm2", "The capital of France is", max_new_tokens=8)
    print("\nlmforge is up.", flush=True)
    print(f"  gateway (gRPC, reflection on): {target}")
    for text, result in zip(
        ["a gorgeous, witty, seductive movie.", "the plot is dull and slow."],
        sentiment.results,
        strict=True,
    ):
        print(f"  Classify sentiment {text!r} -> {result.top.label} {result.top.score:.3f}")
    vector = embedded.embeddings[0]
    print(
        f"  Embed minilm -> {len(vector)} dims [{', '.join(f'{v:+.3f}' for v in vector[:4])}, ...]"
        f" served by {embedded.served_by.triton_model} v{embedded.served_by.triton_model_version}"
    )
    print(
        f"  Generate smollm2 'The capital of France is' -> {generated.text!r} "
        f"({generated.usage.output_tokens} tokens, {generated.finish_reason})"
    )
    cli = _cli_path()
    print("\nTry it:")
    print(f"  {cli} client --target {target} classify --model sentiment 'what a great film'")
    print(f"  {cli} client --target {target} embed --model minilm 'hello world'")
    print(
        f"  {cli} client --target {target} generate --model smollm2 --stream --chat "
        "'Write a haiku about the sea'"
    )
    print(f"  {cli} client --target {target} models")
    print(
        f"  npx @bufbuild/buf curl --protocol grpc --http2-prior-knowledge --list-methods http://{target}"
    )


def _show_http_calls(port: int) -> None:
    base = f"http://127.0.0.1:{port}/v1"
    print(f"\nOpenAI-compatible HTTP API: {base} (docs/openai.md)")
    print(
        f"  curl {base}/chat/completions -H 'Content-Type: application/json' -d "
        """'{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}]}'"""
    )
    print(
        f"  curl {base}/embeddings -H 'Content-Type: application/json' -d "
        """'{"model": "minilm", "input": "hello world"}'"""
    )
    print(f"  openai.OpenAI(base_url='{base}', api_key='-').embeddings.create(...)")


async def _show_calls_on(server: GatewayServer) -> None:
    await _show_calls(server.address)
    if server.http_port is not None:
        _show_http_calls(server.http_port)
    print("Stop with Ctrl-C.\n", flush=True)


def _run(args: argparse.Namespace) -> int:
    from triton_host.launcher import TritonServer, TritonStartError
    from triton_host.supervisor import RestartPolicy, TritonSupervisor

    repository = (
        Path(args.repository).expanduser()
        if args.repository
        else settings_of_trainer().cache / "demo-repository"
    )
    if not args.no_build:
        try:
            build_demo_repository(repository)
        except subprocess.CalledProcessError as exc:
            logger.error("building the demo repository failed (exit %s)", exc.returncode)
            return 1
    settings = Settings.from_env()
    port = args.port if args.port is not None else (settings.port or 50051)

    def give_up(reason: str) -> None:  # from the supervisor's thread: stop serving
        os.kill(os.getpid(), signal.SIGTERM)

    policy = RestartPolicy(max_restarts=args.max_triton_restarts)
    try:
        with TritonServer(repository) as triton:
            logger.info("tritonserver ready on %s (log %s)", triton.grpc_url, triton.log_path)
            http_port = args.http_port if args.http_port is not None else settings.http_port
            if args.no_http:
                http_port = None
            elif http_port is None:
                http_port = DEMO_HTTP_PORT
            config = demo_config(triton.grpc_url, repository, port, args.metrics_port, http_port)
            with TritonSupervisor(triton, policy, on_give_up=give_up) as supervisor:
                asyncio.run(serve(config, on_started=_show_calls_on))
    except (TritonStartError, OSError) as exc:
        logger.error("%s", exc)
        return 1
    if supervisor.gave_up is not None:
        logger.error("stopped: %s", supervisor.gave_up)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up",
        help="build the demo repository, start tritonserver and the gateway (embedded mode)",
        description="Build (or reuse) the demo model repository, serve it with the bundled "
        "tritonserver and put the gateway in front of it on localhost.",
    )
    parser.add_argument(
        "--repository",
        default=None,
        help="where the demo repository is written (default: $LMFORGE_CACHE/demo-repository, "
        "~/.cache/lmforge/demo-repository)",
    )
    parser.add_argument("--no-build", action="store_true", help="serve --repository as it is")
    parser.add_argument("--port", type=int, default=None, help="gateway port (default 50051)")
    parser.add_argument("--metrics-port", type=int, default=9464, help="Prometheus port")
    parser.add_argument(
        "--http-port",
        type=int,
        default=None,
        help=f"OpenAI-compatible HTTP API port (default {DEMO_HTTP_PORT}; docs/openai.md)",
    )
    parser.add_argument("--no-http", action="store_true", help="serve no HTTP API")
    parser.add_argument(
        "--max-triton-restarts",
        type=int,
        default=5,
        help="give up when tritonserver dies this often within 5 minutes (default 5)",
    )
    parser.set_defaults(handler=_run)
