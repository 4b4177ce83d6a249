"""The plain PyTorch loop the DeepSpeed trainer is measured against.

Same model (:func:`trainer.training.loop.build_model`), same batches (the trainer's collator
and length-grouped sampler), same optimizer and schedule, same precision handling — only
DeepSpeed's engine, the multi-rank machinery and the trainer's bookkeeping are missing. What
the trainer costs beyond this loop is overhead to remove.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from trainer.training.config import RunConfig
from trainer.training.loop import _load_tokenizer, build_model
from trainer.training.optim import build_optimizer
from trainer.training.precision import resolve
from trainer.training.sampling import IndexStream
from trainer.training.tasks import Collator, load_task, text_lengths


@dataclass(frozen=True)
class LoopSpeed:
    steps: int
    seconds: float
    rows_per_step: int

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.steps * self.rows_per_step / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps_per_s": self.steps_per_s, "rows_per_s": self.rows_per_s}


def plain_loop_speed(config: RunConfig, steps: int, warmup: int = 10) -> LoopSpeed:
    """Train the config's first task with a plain loop; time ``steps`` after ``warmup``."""
    torch.manual_seed(config.seed)
    tokenizer = _load_tokenizer(config)
    tasks = [load_task(config.tasks[0])]
    model = build_model(config, tasks, tokenizer)
    model.train()
    batch_size = config.deepspeed.micro_batch_size
    stream = IndexStream(
        len(tasks[0].train),
        batch_size,
        seed=config.seed,
        task_index=0,
        rank=0,
        world_size=1,
        example_weights=None,
        lengths=text_lengths(tasks[0].train) if config.training.group_by_length else None,
    )
    collate = Collator(tokenizer, config.model.max_length)
    optimizer, scheduler = build_optimizer(model, config.optimizer, steps + warmup)
    precision = resolve(config.deepspeed.precision, cuda=False)
    generator = torch.Generator().manual_seed(config.seed)
    clip = config.deepspeed.gradient_clipping
    started = 0.0
    for step in range(steps + warmup):
        if step == warmup:
            started = time.perf_counter()
        batch = collate(tasks[0], tasks[0].train, stream.next_batch(), generator)
        with precision.forward():
            loss = model(task=tasks[0].name, **batch).loss
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return LoopSpeed(steps, time.perf_counter() - started, batch_size)


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.training.reference RUN.yaml STEPS``: print the loop's speed as JSON."""
    import argparse
    import json

    from trainer.training.config import load_config

    parser = argparse.ArgumentParser(prog="trainer.training.reference")
    parser.add_argument("config")
    parser.add_argument("steps", type=int)
    args = parser.parse_args(argv)
    speed = plain_loop_speed(load_config(args.config), args.steps)
    print(json.dumps(speed.as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
