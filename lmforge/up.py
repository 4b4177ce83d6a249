"""``lmforge up``: the embedded default, one command from nothing to a served API.

Builds the demo model repository (real all-MiniLM-L6-v2 embeddings, a sentiment
classifier fine-tuned on SST-2 and SmolLM2-135M-Instruct generating text; all cached after the
first run), starts the ``tritonserver``
bundled in the nvidia-pytriton wheel on it, starts the gateway in front of it, makes one
real call of each kind, prints how to make them yourself, and serves until SIGINT/SIGTERM.
Triton is supervised (:mod:`triton_host.supervisor`): when it dies it is restarted with
back-off on the same ports (the gateway reconnects by itself, its health NOT_SERVING meanwhile);
after repeated failures ``lmforge up`` gives up loudly and exits with an error.

``lmforge up --spec SPEC.yaml`` does the same for your own models: it builds the repository
from a repository spec (the schema ``lmforge repo build`` takes; checkpoints from the trainer or
any HF folder) and serves one route per model (route name = model name, the spec's task).

The repository is built in a child process (``lmforge repo demo`` / ``lmforge repo build``), so
the serving process never imports the training stack. This module is wiring only: the repository builder, the
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge_client.client import AsyncLmforgeClient

from gateway.config import GatewayConfig
from gateway.server import GatewayServer, serve
from gateway.settings import Settings
from trainer.errors import SpecError, TrainerError
from trainer.repository.demo_serving import (
    DEMO_MODELS,
    build_demo_repository,
    build_spec_repository,
    routes_for_spec,
    spec_repository_key,
)
from trainer.repository.spec import load_spec
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
    models: Sequence[Mapping[str, Any]] = DEMO_MODELS,
) -> GatewayConfig:
    """The gateway in front of the embedded Triton; it reads the same repository, so it
    tokenizes itself and calls each model's encoder directly. The OpenAI-compatible HTTP API
    is on ``http_port`` (None: off). ``models``: its routes (default: the demo's)."""
    server = {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port}
    return GatewayConfig.from_mapping(
        {
            "server": {**server, "http_port": http_port},
            "triton": {"url": triton_url, "repository": str(repository)},
            "models": [dict(m) for m in models],
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


#: what the printed example commands send, per task
_EXAMPLE_TEXT = {
    "classify": "what a great film",
    "embed": "hello world",
    "generate": "Write a haiku about the sea",
}


async def _show_demo_calls(client: AsyncLmforgeClient) -> None:
    """One real call of each kind on the demo's models."""
    sentiment = await client.classify(
        "sentiment", ["a gorgeous, witty, seductive movie.", "the plot is dull and slow."]
    )
    embedded = await client.embed("minilm", ["lmforge serves typed gRPC APIs."])
    generated = await client.generate("smollm2", "The capital of France is", max_new_tokens=8)
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


def grpc_call_lines(cli: str, target: str, routes: Sequence[Mapping[str, Any]]) -> list[str]:
    """How to call each route with ``lmforge client`` (and list the API with buf curl)."""
    lines = []
    for route in routes:
        name, task = route["name"], route["task"]
        text = _EXAMPLE_TEXT[task]
        if task == "generate":
            lines.append(
                f"  {cli} client --target {target} generate --model {name} --stream --chat '{text}'"
            )
        else:
            lines.append(f"  {cli} client --target {target} {task} --model {name} '{text}'")
    lines.append(f"  {cli} client --target {target} models")
    lines.append(
        f"  npx @bufbuild/buf curl --protocol grpc --http2-prior-knowledge --list-methods http://{target}"
    )
    return lines


def http_call_lines(port: int, routes: Sequence[Mapping[str, Any]]) -> list[str]:
    """How to call each route over the OpenAI-compatible HTTP API (docs/openai.md)."""
    root = f"http://127.0.0.1:{port}"
    base = f"{root}/v1"
    json_header = "-H 'Content-Type: application/json' -d"
    lines = [f"OpenAI-compatible HTTP API: {base} (docs/openai.md)"]
    for route in routes:
        name, task = route["name"], route["task"]
        text = _EXAMPLE_TEXT[task]
        if task == "generate":
            body = f'{{"model": "{name}", "messages": [{{"role": "user", "content": "{text}"}}]}}'
            lines.append(f"  curl {base}/chat/completions {json_header} '{body}'")
        elif task == "embed":
            body = f'{{"model": "{name}", "input": "{text}"}}'
            lines.append(f"  curl {base}/embeddings {json_header} '{body}'")
        else:
            body = f'{{"model": "{name}", "inputs": "{text}"}}'
            lines.append(f"  curl {root}/predict {json_header} '{body}'")
    tasks = {route["task"] for route in routes}
    if "embed" in tasks or "generate" in tasks:
        call = "embeddings.create" if "embed" in tasks else "chat.completions.create"
        lines.append(f"  openai.OpenAI(base_url='{base}', api_key='-').{call}(...)")
    return lines


async def _show_calls(
    server: GatewayServer, routes: Sequence[Mapping[str, Any]], demo: bool
) -> None:
    target = server.address
    async with AsyncLmforgeClient(target) as client:
        await client.wait_for_health("SERVING", timeout=120.0)
        print("\nlmforge is up.", flush=True)
        print(f"  gateway (gRPC, reflection on): {target}")
        if demo:
            await _show_demo_calls(client)
        else:
            for route in routes:
                print(f"  {route['task']:<8} {route['name']}")
    print("\nTry it:")
    print("\n".join(grpc_call_lines(_cli_path(), target, routes)))
    if server.http_port is not None:
        print("\n" + "\n".join(http_call_lines(server.http_port, routes)))
    print("Stop with Ctrl-C.\n", flush=True)


def _spec_error(message: str) -> int:
    """A bad ``--spec``: one line on stderr, exit code 2."""
    one_line = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"lmforge up: {one_line}", file=sys.stderr, flush=True)
    return 2


def spec_routes(spec_path: Path) -> tuple[dict[str, Any], ...]:
    """The gateway routes of the repository spec at ``spec_path``; raises
    :class:`~trainer.errors.SpecError` when it is missing or invalid, or names a checkpoint
    folder without a ``config.json``."""
    spec = load_spec(spec_path)
    missing = [
        str(m.checkpoint) for m in spec.models if not (m.checkpoint / "config.json").is_file()
    ]
    if missing:
        raise SpecError(f"{spec_path}: checkpoints without config.json: {', '.join(missing)}")
    return routes_for_spec(spec)


def _run(args: argparse.Namespace) -> int:
    from triton_host.launcher import TritonServer, TritonStartError
    from triton_host.supervisor import RestartPolicy, TritonSupervisor

    spec_path = Path(args.spec).expanduser() if args.spec else None
    routes: Sequence[Mapping[str, Any]] = DEMO_MODELS
    if spec_path is not None:
        try:
            routes = spec_routes(spec_path)
        except TrainerError as exc:
            return _spec_error(str(exc))
    if args.repository:
        repository = Path(args.repository).expanduser()
    elif spec_path is not None:
        key = spec_repository_key(spec_path)
        repository = settings_of_trainer().cache / f"up-{key}" / "repository"
    else:
        repository = settings_of_trainer().cache / "demo-repository"
    if not args.no_build:
        try:
            if spec_path is None:
                build_demo_repository(repository)
            else:
                build_spec_repository(spec_path, repository)
        except subprocess.CalledProcessError as exc:
            what = "the demo repository" if spec_path is None else f"the repository of {spec_path}"
            logger.error("building %s failed (exit %s)", what, exc.returncode)
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
            config = demo_config(
                triton.grpc_url, repository, port, args.metrics_port, http_port, routes
            )

            async def show_calls(server: GatewayServer) -> None:
                await _show_calls(server, routes, demo=spec_path is None)

            with TritonSupervisor(triton, policy, on_give_up=give_up) as supervisor:
                asyncio.run(serve(config, on_started=show_calls))
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
        help="build the demo repository (or your --spec), start tritonserver and the gateway "
        "(embedded mode)",
        description="Build (or reuse) the demo model repository, or the repository of your own "
        "repository spec (--spec), serve it with the bundled tritonserver and put the gateway in "
        "front of it on localhost, one route per model.",
    )
    parser.add_argument(
        "--spec",
        default=None,
        metavar="SPEC.yaml",
        help="serve your own models: a repository spec (the schema 'lmforge repo build' takes); "
        "one route per model, named after it (default: the demo)",
    )
    parser.add_argument(
        "--repository",
        default=None,
        help="where the repository is written (default: $LMFORGE_CACHE/demo-repository, or "
        "$LMFORGE_CACHE/up-<hash of the spec>/repository with --spec; LMFORGE_CACHE defaults to "
        "~/.cache/lmforge)",
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
