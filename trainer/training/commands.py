"""``lmforge train``: launch a run through DeepSpeed's launcher, or export a task head.

    lmforge train RUN.yaml [--resume] [--num-ranks N] [--hostfile F] [--master-port P]
    lmforge train export RUN_DIR --task NAME --out DIR [--from model|best]

No torch import happens here; the launcher starts ``trainer.training.entry`` on every rank.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from trainer.errors import TrainerError
from trainer.training.config import load_config

logger = logging.getLogger(__name__)
ENTRY_MODULE = "trainer.training.entry"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train with DeepSpeed from a run config, or export a task head of a run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="RUN.yaml|export", help="run config, or 'export'")
    parser.add_argument("run_dir", nargs="?", help="export: the run's output_dir")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--num-ranks", type=int, help="processes on this machine (CPU or GPUs)")
    parser.add_argument("--hostfile", help="DeepSpeed hostfile for multi-node runs")
    parser.add_argument("--master-port", type=int, help="rendezvous port (default: a free one)")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument("--task", help="export: task name")
    parser.add_argument("--out", help="export: destination folder")
    parser.add_argument(
        "--from", dest="source", choices=["best", "model"], help="export: best or final model"
    )
    parser.set_defaults(handler=handle)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launcher_command(
    config_path: str,
    *,
    resume: bool,
    num_ranks: int | None,
    hostfile: str | None,
    master_port: int,
) -> list[str]:
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--master_port", str(master_port)]
    if hostfile is not None:
        cmd += ["--hostfile", hostfile]
    if num_ranks is not None:
        cmd += ["--num_gpus", str(num_ranks)]
    cmd += ["--module", ENTRY_MODULE, config_path]
    if resume:
        cmd.append("--resume")
    return cmd


def default_ranks() -> int | None:
    """One rank on a machine without GPUs (None: DeepSpeed's choice, one per GPU)."""
    import torch

    if torch.cuda.is_available():
        return None
    logger.info(
        "no GPU: training on one rank. Ranks on one CPU split the same cores, and each step "
        "also pays an all-reduce of every gradient (see `lmforge bench train`); pass "
        "--num-ranks to choose, or --hostfile for several machines"
    )
    return 1


def _export(args: argparse.Namespace) -> int:
    if not args.run_dir or not args.task or not args.out:
        logger.error("usage: lmforge train export RUN_DIR --task NAME --out DIR")
        return 2
    from trainer.training.export import export_from_run

    run_dir = Path(args.run_dir)
    source = args.source or ("best" if (run_dir / "best").is_dir() else "model")
    export_from_run(run_dir, args.task, Path(args.out), which=source)
    return 0


def handle(args: argparse.Namespace) -> int:
    try:
        if args.target == "export":
            return _export(args)
        if args.run_dir is not None:
            logger.error(
                "unexpected argument %r (did you mean 'lmforge train export ...'?)", args.run_dir
            )
            return 2
        misplaced = [f for f, v in (("--task", args.task), ("--out", args.out)) if v is not None]
        if args.source is not None:
            misplaced.append("--from")
        if misplaced:
            logger.error(
                "%s only apply to 'lmforge train export RUN_DIR ...', not to a training run",
                ", ".join(misplaced),
            )
            return 2
        if args.num_ranks is not None and args.num_ranks < 1:
            logger.error("--num-ranks must be >= 1, got %d", args.num_ranks)
            return 2
        config = load_config(args.target)
        marker = config.output_dir / "checkpoints" / "complete.json"
        if marker.is_file() and not args.resume:
            logger.error(
                "%s already holds checkpoints: pass --resume or choose another output_dir",
                config.output_dir,
            )
            return 1
        if args.resume and not marker.is_file():
            logger.error("--resume: no completed checkpoint in %s", marker.parent)
            return 1
        if args.check:
            logger.info(
                "%s: valid (%d tasks, output %s)", args.target, len(config.tasks), config.output_dir
            )
            return 0
        num_ranks = args.num_ranks
        if num_ranks is None and args.hostfile is None:
            num_ranks = default_ranks()
        cmd = launcher_command(
            str(Path(args.target).resolve()),
            resume=args.resume,
            num_ranks=num_ranks,
            hostfile=args.hostfile,
            master_port=args.master_port or _free_port(),
        )
    except TrainerError as exc:
        logger.error("%s", exc)
        return 1
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    logger.info("launching: %s", " ".join(cmd))
    return subprocess.call(cmd, env=env)
