"""The ``lmforge`` command: one entry point, one subcommand per concern.

Each package registers its own subcommands through a ``register(subparsers)`` function:
the gateway (``serve``, ``client``), the embedded Triton launcher (``triton``), the trainer
(``train``, ``repo``, ...) and this composition root (``up``). None of those modules imports
torch, transformers or deepspeed at import time, so ``lmforge --help`` stays light.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from benchmarks import cli as bench
from benchmarks import report
from gateway.cli import COMMANDS as GATEWAY_COMMANDS
from gateway.cli import build_parser, run
from lmforge import pipeline, rollout_cli, up
from trainer import cli as trainer_cli
from triton_host import launcher


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        "lmforge",
        "Train, compress, export and serve transformer models behind a typed gRPC API.",
        (
            up.register,
            *GATEWAY_COMMANDS,
            launcher.register,
            trainer_cli.register,
            bench.register,
            report.register,
            pipeline.register,
            rollout_cli.register,
        ),
    )
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
