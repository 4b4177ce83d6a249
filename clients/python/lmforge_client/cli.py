"""``lmforge client``: call a running gateway from the shell; prints JSON.

lmforge client --target 127.0.0.1:50051 classify --model sentiment "great film" "dull plot"
lmforge client embed --model minilm --dimensions 64 "a sentence"
lmforge client generate --model smollm2 --max-new-tokens 32 "The capital of France is"
lmforge client generate --model smollm2 --stream --chat --stop "\n" "Write a haiku about rain"
lmforge client models
lmforge client health
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from lmforge_client.client import LmforgeClient
from lmforge_client.types import TRUNCATIONS, GenerationKwargs, LmforgeError

#: where ``lmforge client`` calls unless ``--target`` or ``$LMFORGE_GATEWAY_TARGET`` says otherwise
DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "LMFORGE_GATEWAY_TARGET"


def _print(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _options(args: argparse.Namespace) -> GenerationKwargs:
    messages = [("system", args.system), ("user", args.prompt)] if args.system else []
    return {
        "messages": messages,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "repetition_penalty": args.repetition_penalty,
        "stop": tuple(args.stop or ()),
        "seed": args.seed,
        "use_chat_template": args.chat,
        "truncation": args.truncation,
    }


def _stream(client: LmforgeClient, args: argparse.Namespace) -> Any:
    """Print the text as it comes; the last chunk's summary is the JSON result."""
    last = None
    prompt = "" if args.system else args.prompt
    for chunk in client.generate_stream(args.model, prompt, **_options(args)):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        last = chunk
    sys.stdout.write("\n")
    return None if last is None else dataclasses.asdict(last) | {"text": None}


def _call(args: argparse.Namespace) -> Any:
    with LmforgeClient(args.target, timeout=args.timeout) as client:
        if args.client_command == "generate":
            if args.stream:
                return _stream(client, args)
            prompt = "" if args.system else args.prompt
            return dataclasses.asdict(client.generate(args.model, prompt, **_options(args)))
        if args.client_command == "classify":
            return dataclasses.asdict(
                client.classify(
                    args.model,
                    args.texts,
                    top_k=args.top_k,
                    truncation=args.truncation,
                    pairs=args.pairs or (),
                )
            )
        if args.client_command == "embed":
            return dataclasses.asdict(
                client.embed(
                    args.model,
                    args.texts,
                    normalize=args.normalize,
                    dimensions=args.dimensions,
                    truncation=args.truncation,
                )
            )
        if args.client_command == "models":
            return [dataclasses.asdict(m) for m in client.list_models()]
        return {"service": args.service, "status": client.health(args.service)}


def _run(args: argparse.Namespace) -> int:
    if args.client_command is None:
        args.client_parser.print_help()
        return 2
    try:
        _print(_call(args))
    except BrokenPipeError:  # e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except LmforgeError as exc:
        error = {
            "code": exc.code.name,
            "message": exc.message,
            "field_violations": [dataclasses.asdict(v) for v in exc.violations],
        }
        json.dump({"error": error}, sys.stderr, indent=2)
        sys.stderr.write("\n")
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "client",
        help="call a running gateway (classify, embed, generate, models, health)",
        description="Call lmforge.v1.InferenceService and print the reply as JSON.",
    )
    parser.add_argument(
        "--target",
        default=os.environ.get(TARGET_ENV) or DEFAULT_TARGET,
        help="gateway host:port (default: $LMFORGE_GATEWAY_TARGET or %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    parser.set_defaults(handler=_run, client_parser=parser)
    commands = parser.add_subparsers(dest="client_command", metavar="CALL")

    classify = commands.add_parser("classify", help="classify texts")
    classify.add_argument("--model", required=True, help="logical model name")
    classify.add_argument("--top-k", type=int, default=0, help="labels per text (0: all)")
    classify.add_argument("--truncation", choices=sorted(TRUNCATIONS), default="end")
    classify.add_argument(
        "--pair",
        dest="pairs",
        action="append",
        metavar="TEXT",
        help="second text of the next input, for sentence-pair models (repeat per input)",
    )
    classify.add_argument("texts", nargs="+", metavar="TEXT")

    embed = commands.add_parser("embed", help="embed texts")
    embed.add_argument("--model", required=True, help="logical model name")
    embed.add_argument("--dimensions", type=int, default=None, help="keep the first N dims")
    embed.add_argument(
        "--no-normalize", dest="normalize", action="store_false", help="skip L2 normalization"
    )
    embed.add_argument("--truncation", choices=sorted(TRUNCATIONS), default="end")
    embed.add_argument("texts", nargs="+", metavar="TEXT")

    generate = commands.add_parser("generate", help="generate a completion of a prompt")
    generate.add_argument("--model", required=True, help="logical model name")
    generate.add_argument("--max-new-tokens", type=int, default=0, help="0: the model's default")
    generate.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    generate.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling (0: off)")
    generate.add_argument("--top-k", type=int, default=0, help="0: off")
    generate.add_argument("--repetition-penalty", type=float, default=0.0, help="0 or 1: off")
    generate.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeat)")
    generate.add_argument("--seed", type=int, default=None, help="reproducible sampling")
    generate.add_argument("--chat", action="store_true", help="apply the chat template")
    generate.add_argument(
        "--system", metavar="TEXT", help="a system message before PROMPT (implies --chat)"
    )
    generate.add_argument("--truncation", choices=sorted(TRUNCATIONS), default="end")
    generate.add_argument("--stream", action="store_true", help="print the text as it is generated")
    generate.add_argument("prompt", metavar="PROMPT")

    commands.add_parser("models", help="list the served models")

    health = commands.add_parser("health", help="gRPC health status")
    health.add_argument("--service", default="", help='service name ("" = overall)')


def main(argv: list[str] | None = None) -> int:
    """``lmforge-client``: the same calls as ``lmforge client``, from the client distribution."""
    parser = argparse.ArgumentParser(prog="lmforge-client")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(["client", *(sys.argv[1:] if argv is None else argv)])
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
