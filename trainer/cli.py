"""``lmforge`` subcommands owned by the trainer package.

Each area registers its own subcommands; none of these modules imports torch at import
time (handlers import what they need when they run).
"""

from __future__ import annotations

import argparse
import importlib

_AREAS: tuple[str, ...] = (
    "trainer.repository.commands",  # repo build | repo demo | repo check
    "trainer.training.commands",  # train
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in _AREAS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that area is not part of this installation yet
            raise
        module.register(subparsers)
