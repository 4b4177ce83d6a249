"""``lmforge`` subcommands owned by the trainer package.

None of these modules imports torch at import time: handlers import what they need when
they run.
"""

from __future__ import annotations

import argparse

from trainer.repository import commands as repository_commands
from trainer.training import commands as training_commands
from trainer.training import prune_cli


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    repository_commands.register(subparsers)  # repo build | repo demo | repo check
    training_commands.register(subparsers)  # train, train export
    prune_cli.register(subparsers)  # prune
