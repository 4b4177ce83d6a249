"""The ``lmforge`` command line: one entry point, one subcommand per concern.

Each subcommand is registered by the module that owns it through a ``register(subparsers)``
function. Those modules must not import torch, transformers or deepspeed at import time:
heavy imports happen inside the command's handler, so ``lmforge --help`` and the serving
commands stay light.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# (module, attribute) pairs; each attribute is ``register(subparsers) -> None``.
_COMMANDS: tuple[str, ...] = (
    "gateway.up",  # up: build the demo repository, start Triton and the gateway
    "gateway.server",  # serve: the gRPC gateway
    "gateway.client_cli",  # client: classify / embed / generate / models
    "triton_models.launcher",  # triton: the bundled tritonserver
    "trainer.cli",  # repo build, train, ...
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge",
        description="Train, export and serve transformer models behind a typed gRPC API.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a part that is not installed yet
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result = handler(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
