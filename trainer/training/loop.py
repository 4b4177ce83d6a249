"""The DeepSpeed training loop: task sampling, evaluation, checkpoints, best model, export.

Every rank runs this. All ranks draw the same task at each micro-step (same sampler seed) and
read disjoint slices of its batch. Randomness is derived from (seed, micro-step, rank), so a
resumed run repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from trainer.errors import CheckpointError, ConfigError, TrainerError
from trainer.training import checkpoint
from trainer.training.augment import augment_rows
from trainer.training.config import ENCODER_TASKS, RunConfig, dump_config
from trainer.training.data import Examples, write_validation_rows
from trainer.training.distill import Distiller, Teacher, copy_heads, load_teacher, student_encoder
from trainer.training.export import TASKS_FILE, export_task, load_bundle, save_bundle
from trainer.training.modeling import (
    MultiTaskModel,
    build_encoder,
    encoder_kind,
    init_lm_heads_from_embeddings,
)
from trainer.training.optim import build_optimizer, deepspeed_config
from trainer.training.precision import resolve as resolve_precision
from trainer.training.runlog import MetricsLog
from trainer.training.sampling import IndexStream, TaskSampler, task_probabilities
from trainer.training.tasks import Collator, EvalAccumulator, Task, load_task, text_lengths

logger = logging.getLogger(__name__)
T = TypeVar("T")


class RankFailure(TrainerError):
    """Another rank failed a step all ranks take part in; this rank stops too."""


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([abs(p) for p in parts]).generate_state(1)[0])


def total_steps(config: RunConfig, tasks: list[Task], world_size: int) -> int:
    if config.training.max_steps is not None:
        return config.training.max_steps
    ds = config.deepspeed
    per_step = ds.micro_batch_size * ds.gradient_accumulation_steps * world_size
    rows = sum(len(t.train) for t in tasks)
    return max(1, math.ceil(float(config.training.epochs or 1.0) * rows / per_step))


def _load_tokenizer(config: RunConfig) -> Any:
    from transformers import AutoTokenizer

    path = config.tokenizer_path
    if not path.is_dir():
        raise ConfigError(f"tokenizer folder {path} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not tokenizer.is_fast:
        raise ConfigError(f"{path}: a fast tokenizer (tokenizer.json) is required")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def build_model(
    config: RunConfig, tasks: list[Task], tokenizer: Any, teacher: Teacher | None = None
) -> MultiTaskModel:
    if config.model.student is not None:
        if teacher is None:
            raise ConfigError("model.student needs the distillation teacher")
        encoder = student_encoder(teacher.encoder, config.model.student)
    else:
        encoder = build_encoder(config.model, len(tokenizer), tokenizer.pad_token_id)
    kind = encoder_kind(encoder.config)
    for task in tasks:
        needs = "encoder" if task.config.type in ENCODER_TASKS else "decoder"
        if needs != kind:
            raise ConfigError(
                f"task {task.name!r} ({task.config.type}) needs an {needs}, "
                f"but the model ({encoder.config.model_type}) is a {kind}"
            )
    if any(t.config.type == "masked_lm" for t in tasks) and tokenizer.mask_token_id is None:
        raise ConfigError("masked_lm needs a tokenizer with a mask token")
    model = MultiTaskModel(encoder, [t.spec for t in tasks])
    init_lm_heads_from_embeddings(model)
    freeze(model, config.model.freeze)
    pretrained = config.model.pretrained
    if pretrained is not None and (pretrained / TASKS_FILE).is_file():
        source, _ = load_bundle(pretrained)  # a trainer bundle: continue with its heads too
        logger.info("heads from %s: %s", pretrained, copy_heads(source, model))
    if teacher is not None and teacher.model is not None:
        logger.info("heads from the teacher: %s", copy_heads(teacher.model, model))
    return model


def freeze(model: MultiTaskModel, prefixes: tuple[str, ...]) -> None:
    """Keep the parameters whose names start with one of ``prefixes`` fixed."""
    for prefix in prefixes:
        matched = [p for name, p in model.named_parameters() if name.startswith(prefix)]
        if not matched:
            names = sorted({n.rsplit(".", 2)[0] for n, _ in model.named_parameters()})[:12]
            raise ConfigError(f"model.freeze: {prefix!r} matches no parameter (e.g. {names})")
        for parameter in matched:
            parameter.requires_grad_(False)


def gather_full_state(engine: Any, zero_stage: int) -> dict[str, torch.Tensor] | None:
    """Collective: the full fp32 state dict on rank 0 (None elsewhere)."""
    import deepspeed

    module = engine.module

    def copy() -> dict[str, torch.Tensor] | None:
        if dist.get_rank() != 0:
            return None
        return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}

    if zero_stage == 3:
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return copy()
    return copy()


class Trainer:
    def __init__(self, config: RunConfig, resume: bool) -> None:
        import deepspeed

        self.config = config
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.out = config.output_dir
        self.ckpt_dir = self.out / "checkpoints"
        if not resume and (self.ckpt_dir / checkpoint.MARKER).is_file():
            raise CheckpointError(
                f"{self.out} already holds checkpoints: pass --resume or choose another output_dir"
            )
        if resume and not (self.ckpt_dir / checkpoint.MARKER).is_file():
            raise CheckpointError(f"--resume: no completed checkpoint in {self.ckpt_dir}")
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.tokenizer = _load_tokenizer(config)
        self.tasks = [load_task(t) for t in config.tasks]
        self.collate = Collator(self.tokenizer, config.model.max_length)
        self.distiller: Distiller | None = None
        teacher = None
        if config.distill is not None:
            teacher = load_teacher(config.distill.teacher, config.distill.attention_weight > 0)
        self.model = build_model(config, self.tasks, self.tokenizer, teacher)
        if config.distill is not None and teacher is not None:
            layers = int(self.model.encoder.config.num_hidden_layers)
            self.distiller = Distiller(config.distill, teacher, layers)
        self.total = total_steps(config, self.tasks, self.world)
        self.precision = resolve_precision(config.deepspeed.precision, torch.cuda.is_available())
        optimizer, scheduler = build_optimizer(self.model, config.optimizer, self.total)
        self.engine, _, _, _ = deepspeed.initialize(
            model=self.model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=deepspeed_config(config.deepspeed, self.world, self.precision.deepspeed),
            dist_init_required=False,
        )
        probs = task_probabilities(
            [len(t.train) for t in self.tasks],
            config.sampling.strategy,
            config.sampling.temperature,
        )
        self.sampler = TaskSampler(probs, config.seed)
        mb = config.deepspeed.micro_batch_size
        self.streams = [
            IndexStream(
                len(t.train),
                mb,
                seed=config.seed,
                task_index=i,
                rank=self.rank,
                world_size=self.world,
                example_weights=t.example_weights(),
                lengths=text_lengths(t.train) if config.training.group_by_length else None,
            )
            for i, t in enumerate(self.tasks)
        ]
        self.step = 0
        self.micro = 0
        self.best: dict[str, Any] | None = None
        self.since_best = 0  # evaluations since best_metric last improved
        self.last_eval: dict[str, dict[str, float]] = {}
        tensorboard = self.out / "tensorboard" if self.rank == 0 else None
        self.log = MetricsLog(self.out / "metrics.jsonl", tensorboard)
        if self.rank == 0:
            logger.info(
                "%d steps of %d rows (%d ranks, ZeRO-%d, %s); task mix %s",
                self.total,
                mb * config.deepspeed.gradient_accumulation_steps * self.world,
                self.world,
                config.deepspeed.zero_stage,
                self.precision.name + (" autocast" if self.precision.autocast else ""),
                {t.name: round(float(p), 4) for t, p in zip(self.tasks, probs, strict=True)},
            )
        if resume:
            self._restore(checkpoint.load(self.engine, self.ckpt_dir))

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "micro": self.micro,
            "sampler": self.sampler.state_dict(),
            "streams": [s.state_dict() for s in self.streams],
            "best": self.best,
            "since_best": self.since_best,
            "world_size": self.world,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if int(state["world_size"]) != self.world:
            raise CheckpointError(
                f"checkpoint was written by {state['world_size']} ranks, this run has {self.world}"
            )
        self.step = int(state["step"])
        self.micro = int(state["micro"])
        self.sampler.load_state_dict(state["sampler"])
        for stream, saved in zip(self.streams, state["streams"], strict=True):
            stream.load_state_dict(saved)
        self.best = state["best"]
        self.since_best = int(state.get("since_best", 0))
        if self.rank == 0:
            self.log.truncate_after(self.step)

    # -- training ---------------------------------------------------------------------------
    def _micro_step(self) -> tuple[int, float]:
        index = self.sampler.next()
        task = self.tasks[index]
        generator = torch.Generator().manual_seed(
            derived_seed(self.config.seed, self.micro, self.rank, 1)
        )
        torch.manual_seed(derived_seed(self.config.seed, self.micro, self.rank, 2))  # dropout
        batch = self.collate(task, task.train, self.streams[index].next_batch(), generator)
        augmented = self._augment(task, batch, generator)
        with self.precision.forward():
            if self.distiller is None:
                out = self.engine(task=task.name, **batch)
                loss = out.loss
            else:
                out = self.engine(
                    task=task.name,
                    **batch,
                    output_hidden_states=self.distiller.needs_hidden,
                    output_attentions=self.distiller.needs_attention,
                )
                loss = self.distiller.loss(task.name, task.config.type, batch, out, augmented)
        self.engine.backward(loss * task.config.loss_weight)
        self.engine.step()
        self.micro += 1
        return index, float(loss.detach())

    def _augment(
        self, task: Task, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> torch.Tensor | None:
        """Perturb a share of a distillation batch in place (``distill.augment``); the rows
        that were perturbed, or None."""
        augment = self.config.distill.augment if self.config.distill is not None else None
        if (
            augment is None
            or task.config.type != "classification"
            or len(task.config.text_fields) != 1
        ):
            return None
        batch["input_ids"], batch["attention_mask"], augmented = augment_rows(
            batch["input_ids"],
            batch["attention_mask"],
            augment,
            self.tokenizer.mask_token_id,
            int(self.tokenizer.pad_token_id),
            generator,
        )
        if "token_type_ids" in batch:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return augmented

    def run(self) -> dict[str, Any]:
        started = self.started = time.monotonic()
        cfg = self.config.training
        n = len(self.tasks)
        bar = tqdm(total=self.total, initial=self.step, disable=self.rank != 0, mininterval=2.0)
        self.engine.train()
        sums = torch.zeros(2 * n + 2, dtype=torch.float64)  # losses since the last log line
        while self.step < self.total:
            for _ in range(self.config.deepspeed.gradient_accumulation_steps):
                index, loss = self._micro_step()
                sums[index] += loss
                sums[n + index] += 1
                sums[2 * n] += loss
                sums[2 * n + 1] += 1
            self.step += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == self.total:
                dist.all_reduce(sums)
                self._log_step(sums, n, bar)
                sums.zero_()
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total:
                self._evaluate_and_select()
                if self.stop_early():
                    if self.rank == 0:
                        logger.info(
                            "early stop at step %d: %s has not improved in %d evaluations "
                            "(best %.4f at step %d)",
                            self.step,
                            cfg.best_metric,
                            self.since_best,
                            self.best["value"] if self.best else float("nan"),
                            self.best["step"] if self.best else 0,
                        )
                    break
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total:
                checkpoint.save(
                    self.engine, self.ckpt_dir, self.step, self.state_dict(), cfg.keep_checkpoints
                )
        bar.close()
        final = self.last_eval if self.stop_early() else self._evaluate_and_select()
        summary = self._finish(final, time.monotonic() - started)
        self.log.close()
        return summary

    def _log_step(self, sums: torch.Tensor, n: int, bar: Any) -> None:
        if self.rank != 0:
            return
        loss = float(sums[2 * n] / sums[2 * n + 1])
        record: dict[str, Any] = {
            "step": self.step,
            "elapsed_s": round(time.monotonic() - self.started, 3),  # since training began
            "loss": loss,
            "lr": float(self.engine.get_lr()[0]),
            "task_loss": {
                t.name: float(sums[i] / sums[n + i])
                for i, t in enumerate(self.tasks)
                if sums[n + i] > 0
            },
        }
        self.log.write(record)
        bar.set_postfix(loss=f"{loss:.4f}")

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Collective: every task on its watched split (validation when it has one), the
        rows striped over the ranks."""
        self.engine.eval()
        results: dict[str, dict[str, float]] = {}
        bs = self.config.training.eval_batch_size
        for task in self.tasks:
            examples = task.split(self.config.watched_split(task.config))
            if examples is None:
                continue
            mine = list(range(self.rank, len(examples), self.world))
            batches = math.ceil(math.ceil(len(examples) / self.world) / bs)
            chunks = [mine[b * bs : (b + 1) * bs] for b in range(batches)]
            # every rank runs the same number of forward passes: an empty chunk pads with row 0
            acc = self._accumulate(self.engine, task, examples, chunks)
            states: list[Any] = [None] * self.world
            dist.all_gather_object(states, acc.state())
            results[task.name] = acc.compute(states)
        self.engine.train()
        return results

    @torch.no_grad()
    def evaluate_dev(self, model: MultiTaskModel) -> dict[str, dict[str, float]]:
        """Every task with a dev split, on ``model`` (rank 0's copy of the selected weights):
        the one look at dev a run takes."""
        model.eval()
        results: dict[str, dict[str, float]] = {}
        bs = self.config.training.eval_batch_size
        for task in self.tasks:
            if task.dev is None:
                continue
            rows = list(range(len(task.dev)))
            chunks = [rows[start : start + bs] for start in range(0, len(rows), bs)]
            acc = self._accumulate(model, task, task.dev, chunks)
            results[task.name] = acc.compute([acc.state()])
        return results

    def _accumulate(
        self, forward: Any, task: Task, examples: Examples, chunks: list[list[int]]
    ) -> EvalAccumulator:
        """``forward`` (the engine or a model) over ``examples`` in ``chunks`` of row indices;
        an empty chunk runs row 0 and is not counted."""
        acc = EvalAccumulator(task, examples)
        for b, chunk in enumerate(chunks):
            rows, valid = (chunk, [True] * len(chunk)) if chunk else ([0], [False])
            generator = torch.Generator().manual_seed(
                derived_seed(self.config.seed, b, self.rank, 3)
            )
            batch = self.collate(task, examples, rows, generator)
            with self.precision.forward():
                out = forward(task=task.name, **batch)
            acc.add(out, rows, valid)
        return acc

    def _splits(self) -> dict[str, str]:
        return {t.name: self.config.watched_split(t.config) for t in self.tasks}

    def _evaluate_and_select(self) -> dict[str, dict[str, float]]:
        results = self.last_eval = self.evaluate()
        if not results:
            return results
        if self.rank == 0:
            self.log.write({"step": self.step, "eval": results, "split": self._splits()})
            logger.info("step %d eval (%s): %s", self.step, self._splits(), json.dumps(results))
        cfg = self.config.training
        if cfg.best_metric is None:
            return results
        task_name, _, metric = cfg.best_metric.partition("/")
        value = results.get(task_name, {}).get(metric)
        if value is None:
            raise ConfigError(f"training.best_metric={cfg.best_metric!r} is not among {results}")
        better = self.best is None or (
            value > self.best["value"] if cfg.best_mode == "max" else value < self.best["value"]
        )
        if better:
            self.best = {
                "step": self.step,
                "value": value,
                "metric": cfg.best_metric,
                "split": self.config.watched_split(self.config.task(task_name)),
                "eval": results,
            }
            self.since_best = 0
            self._write_bundle(self.out / "best", {"step": self.step, "selection": self.best})
        else:
            self.since_best += 1
        return results

    def stop_early(self) -> bool:
        patience = self.config.training.early_stopping
        return patience is not None and self.since_best >= patience

    # -- output -------------------------------------------------------------------------------
    def _rank0(self, what: str, work: Callable[[], T]) -> T | None:
        """Collective: rank 0 runs ``work`` while the others wait; every rank learns whether
        it succeeded. A failure on rank 0 raises :class:`RankFailure` on every rank instead
        of leaving the others blocked at a barrier forever."""
        result: T | None = None
        failure: BaseException | None = None
        if self.rank == 0:
            try:
                result = work()
            except Exception as exc:  # reported to every rank below, re-raised on rank 0
                failure = exc
        status = torch.tensor([0 if failure is None else 1], dtype=torch.int64)
        dist.all_reduce(status)  # a collective every rank reaches, whatever rank 0 did
        if failure is not None:
            raise failure
        if int(status.item()):
            raise RankFailure(f"{what} failed on rank 0 (see its log); rank {self.rank} stops")
        return result

    def _write_bundle(self, folder: Path, metrics: dict[str, Any]) -> MultiTaskModel | None:
        """Collective; rank 0 writes the bundle and returns a CPU copy of the model."""
        from transformers import AutoModel

        state = gather_full_state(self.engine, self.config.deepspeed.zero_stage)

        def write() -> MultiTaskModel:
            if state is None:
                raise CheckpointError("rank 0 holds no gathered state")
            encoder = AutoModel.from_config(self.model.encoder.config)
            model = MultiTaskModel(encoder, [t.spec for t in self.tasks])
            model.load_state_dict(state)
            extras = {
                "metrics.json": json.dumps(metrics, indent=2),
                "run.yaml": dump_config(self.config),
            }
            save_bundle(folder, model, state, self.tokenizer, extras)
            return model

        return self._rank0(f"writing {folder}", write)

    def _finish(self, final: dict[str, dict[str, float]], seconds: float) -> dict[str, Any]:
        """Write ``model/`` (the last weights), evaluate the selected weights (``best/`` when
        a best_metric chose them, else the last) on dev once, export them with those numbers
        and say in every metrics.json which split each number comes from."""
        summary: dict[str, Any] = {
            "step": self.step,
            "last_eval": {"split": self._splits(), "eval": final},
            "best": self.best,
            "train_seconds": seconds,
        }
        model = self._write_bundle(self.out / "model", summary)

        def export() -> dict[str, Any]:
            source: MultiTaskModel | None = model
            exported: dict[str, Any] = {"source": "model", "step": self.step}
            if self.best is not None:
                source, _ = load_bundle(self.out / "best")
                exported = {"source": "best", "step": self.best["step"]}
            if source is None:
                raise CheckpointError("no model to export")
            dev = self.evaluate_dev(source)
            exported.update(eval=dev, eval_split="dev", selection=self.best)
            metrics = {**exported, "train_seconds": seconds}
            extras = {
                "metrics.json": json.dumps(metrics, indent=2),
                "run.yaml": dump_config(self.config),
            }
            for task in self.tasks:
                export_task(
                    source,
                    self.tokenizer,
                    task.name,
                    self.out / "exports" / task.name,
                    extra_files=extras,
                )
            summary.update(eval=dev, eval_split="dev", exported=exported["source"])
            (self.out / "model" / "metrics.json").write_text(
                json.dumps(summary, indent=2), encoding="utf-8"
            )
            self.log.write({"step": self.step, "summary": summary})
            logger.info("dev (once, on the %s weights): %s", exported["source"], json.dumps(dev))
            logger.info(
                "finished %d steps in %.1f s; model in %s", self.step, seconds, self.out / "model"
            )
            return summary

        written = [self._rank0("exporting the tasks", export)]
        dist.broadcast_object_list(written, src=0)  # every rank returns rank 0's summary
        return written[0] or summary


def train(config: RunConfig, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) the configured training on the current process group."""
    if dist.get_rank() == 0:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        (config.output_dir / "run.yaml").write_text(dump_config(config), encoding="utf-8")
    trainer = Trainer(config, resume)
    if dist.get_rank() == 0:
        for task in trainer.tasks:
            write_validation_rows(task.config, task.validation, config.output_dir / "validation")
    return trainer.run()
