"""The script DeepSpeed's launcher runs on every rank: ``python -m trainer.training.entry RUN.yaml``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from trainer.errors import TrainerError
from trainer.settings import settings
from trainer.training.config import load_config

logger = logging.getLogger(__name__)


def _threads_per_rank(world_size: int) -> int:
    """Intra-op threads per rank: ``LMFORGE_CPU_THREADS``, else the cores split among ranks.

    On a CPU shared with other work, 1 avoids OpenMP threads spinning against each other.
    """
    configured = settings().cpu_threads
    if configured is not None:
        return configured
    # set by DeepSpeed's launcher for its ranks, not by users
    local = int(os.environ.get("LOCAL_SIZE") or os.environ.get("LOCAL_WORLD_SIZE") or world_size)
    return max(1, (os.cpu_count() or 1) // max(1, local))


def release_shared_memory(rank: int) -> None:
    """Unlink this rank's DeepSpeed all-reduce buffer in ``/dev/shm`` once every rank has
    mapped it: the mappings stay valid, and nothing is left behind when the run ends, fails or
    is killed (each run would otherwise leave ~69 MB of RAM per rank in /dev/shm)."""
    import torch.distributed as dist

    dist.barrier()  # every rank has opened every other rank's buffer by now
    port = os.environ.get("MASTER_PORT", "*")
    for path in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_{rank}"):
        path.unlink(missing_ok=True)
        logger.debug("released %s", path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainer.training.entry")
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--local_rank", type=int, default=None)  # passed by the launcher
    args = parser.parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        import deepspeed
        import torch
        import torch.distributed as dist

        deepspeed.init_distributed()
        release_shared_memory(dist.get_rank())
        torch.set_num_threads(_threads_per_rank(dist.get_world_size()))
        from trainer.training.loop import train

        train(config, resume=args.resume)
    except TrainerError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
