"""DeepSpeed checkpoints with the trainer's own state, a completion marker and pruning.

The marker ``checkpoints/complete.json`` is written (atomically, by rank 0) only after every
rank has finished writing a checkpoint, so a run killed mid-save resumes from the previous one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from trainer.errors import CheckpointError

logger = logging.getLogger(__name__)
MARKER = "complete.json"
CLIENT_KEY = "lmforge"


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value), encoding="utf-8")
    os.replace(tmp, path)


def save(engine: Any, ckpt_dir: Path, step: int, state: dict[str, Any], keep: int) -> None:
    """Collective: every rank calls it. Rank 0 then marks the checkpoint complete and prunes."""
    import torch.distributed as dist

    tag = f"step{step}"
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={CLIENT_KEY: state})
    dist.barrier()
    if dist.get_rank() == 0:
        marker = ckpt_dir / MARKER
        history = read_marker(ckpt_dir).get("tags", []) if marker.is_file() else []
        history = [t for t in history if t != tag] + [tag]
        _write_json_atomic(marker, {"tag": tag, "step": step, "tags": history[-keep:]})
        for old in history[:-keep]:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
        logger.info("checkpoint %s written to %s", tag, ckpt_dir)
    dist.barrier()


def read_marker(ckpt_dir: Path) -> dict[str, Any]:
    marker = ckpt_dir / MARKER
    if not marker.is_file():
        raise CheckpointError(f"no completed checkpoint in {ckpt_dir} (missing {MARKER})")
    try:
        return dict(json.loads(marker.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{marker}: unreadable checkpoint marker: {exc}") from exc


def load(engine: Any, ckpt_dir: Path) -> dict[str, Any]:
    """Restore model, optimizer and scheduler; returns the trainer state saved with them."""
    tag = str(read_marker(ckpt_dir)["tag"])
    path, client = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if path is None or not client or CLIENT_KEY not in client:
        raise CheckpointError(f"{ckpt_dir / tag}: checkpoint could not be loaded")
    logger.info("resumed from %s", ckpt_dir / tag)
    return dict(client[CLIENT_KEY])
