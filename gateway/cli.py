"""``lmforge-gateway``: the gateway's own command line (``serve``, ``client``).

This is what the gateway container runs; it imports nothing but the gateway. The product's
``lmforge`` command (:mod:`lmforge.cli`) offers the same subcommands next to the trainer's
and the embedded server's.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

import lmforge_client.cli as client_cli

from gateway import auth_cli, server

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

#: the gateway's subcommands, each registered by the module that owns it
COMMANDS: tuple[Register, ...] = (server.register, client_cli.register, auth_cli.register)


def build_parser(
    prog: str = "lmforge-gateway",
    description: str = "The lmforge gRPC gateway: Classify, Embed and Generate in front of Triton.",
    commands: Sequence[Register] = COMMANDS,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in commands:
        register(subparsers)
    return parser


def _quiet_root(record: logging.LogRecord) -> bool:
    """Libraries that log through the root logger itself (onnxruntime's quantizer writes a
    line per tensor at INFO) are heard from WARNING up unless ``--log-level DEBUG``."""
    return record.name != "root" or record.levelno >= logging.WARNING


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, configure logging and run the chosen subcommand's handler."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.log_level != "DEBUG":
        for root_handler in logging.getLogger().handlers:
            root_handler.addFilter(_quiet_root)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
