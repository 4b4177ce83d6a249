"""Task runtime: data + head spec per task, batch collation and evaluation metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.training import metrics as M
from trainer.training.config import PAIR_INPUT_TASKS, VALIDATION, TaskConfig
from trainer.training.data import Examples, load_examples, split_validation
from trainer.training.modeling import IGNORE_INDEX, HeadOutput, HeadSpec
from trainer.training.sampling import class_weights

logger = logging.getLogger(__name__)


@dataclass
class Task:
    config: TaskConfig
    train: Examples
    dev: Examples | None
    spec: HeadSpec
    validation: Examples | None = None  # carved out of train: what selection may look at

    @property
    def name(self) -> str:
        return self.config.name

    def split(self, name: str) -> Examples | None:
        """``validation`` or ``dev``."""
        return self.validation if name == VALIDATION else self.dev

    def example_weights(self) -> np.ndarray | None:
        """Per-example sampling weights for oversampling, else None (uniform)."""
        if self.config.imbalance.method != "oversample" or self.spec.label_names is None:
            return None
        labels = np.asarray(self.train.labels, dtype=np.int64)
        weights = class_weights(labels.tolist(), len(self.spec.label_names), 1.0)
        return np.asarray(weights[labels] ** self.config.imbalance.power, dtype=np.float64)


def text_lengths(examples: Examples) -> np.ndarray:
    """Characters per row, a cheap stand-in for token counts when grouping by length."""
    return np.asarray([sum(len(t) for t in row) for row in examples.texts], dtype=np.int64)


def load_task(config: TaskConfig) -> Task:
    train = load_examples(config, config.train, for_training=True)
    validation = None
    if config.validation is not None:
        train, validation = split_validation(
            train, config.validation, stratify=config.type == "classification"
        )
    dev = (
        load_examples(config, config.dev, train.label_names, for_training=False)
        if config.dev is not None
        else None
    )
    imbalance = config.imbalance
    loss = "cross_entropy"
    weights: list[float] | None = None
    if config.type == "classification" and imbalance.method in ("class_weight", "focal"):
        loss = imbalance.method
        if imbalance.method == "class_weight" or imbalance.power > 0:
            names = train.label_names or []
            labels = [int(v) for v in train.labels or []]
            weights = class_weights(labels, len(names), imbalance.power).tolist()
    spec = HeadSpec(
        name=config.name,
        type=config.type,
        label_names=train.label_names,
        text_fields=list(config.text_fields),
        loss=loss,
        gamma=imbalance.gamma,
        class_weights=weights,
        contrastive_scale=config.contrastive_scale,
    )
    logger.info(
        "task %s (%s): %d train rows, %s validation rows (carved from train), %s dev rows%s",
        config.name,
        config.type,
        len(train),
        len(validation) if validation is not None else "no",
        len(dev) if dev is not None else "no",
        f", {train.skipped} malformed rows skipped" if train.skipped else "",
    )
    return Task(config, train, dev, spec, validation)


class Collator:
    """Turns example indices into model inputs; masking uses the caller's generator."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(
        self, task: Task, examples: Examples, indices: list[int], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        rows = [examples.texts[i] for i in indices]
        kind = task.config.type
        if kind in PAIR_INPUT_TASKS and len(task.config.text_fields) == 2:
            texts = [r[0] for r in rows] + [r[1] for r in rows]
            enc = self._encode(texts)
        elif len(task.config.text_fields) == 2:
            enc = self._encode([r[0] for r in rows], [r[1] for r in rows])
        else:
            enc = self._encode([r[0] for r in rows])
        batch = {
            k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        if kind == "masked_lm":
            batch["input_ids"], batch["labels"] = self._mask(
                enc["input_ids"], enc["special_tokens_mask"], task.config.mlm_probability, generator
            )
        elif kind == "causal_lm":
            batch.pop("token_type_ids", None)
            labels = enc["input_ids"].clone()
            labels[enc["attention_mask"] == 0] = IGNORE_INDEX
            batch["labels"] = labels
        elif examples.labels is not None and kind in ("classification", "regression"):
            values = [examples.labels[i] for i in indices]
            dtype = torch.long if kind == "classification" else torch.float32
            batch["labels"] = torch.tensor(values, dtype=dtype)
        return batch

    def _encode(self, texts: list[str], pairs: list[str] | None = None) -> Any:
        return self.tokenizer(
            texts,
            pairs,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )

    def _mask(
        self,
        input_ids: torch.Tensor,
        special: torch.Tensor,
        probability: float,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT masking: of the chosen tokens 80 % [MASK], 10 % random, 10 % unchanged."""
        labels = input_ids.clone()
        chosen = torch.rand(input_ids.shape, generator=generator) < probability
        chosen &= special == 0
        labels[~chosen] = IGNORE_INDEX
        ids = input_ids.clone()
        roll = torch.rand(input_ids.shape, generator=generator)
        ids[chosen & (roll < 0.8)] = self.tokenizer.mask_token_id
        random_tokens = torch.randint(len(self.tokenizer), input_ids.shape, generator=generator)
        swap = chosen & (roll >= 0.8) & (roll < 0.9)
        ids[swap] = random_tokens[swap]
        return ids, labels


class EvalAccumulator:
    """Collects one task's per-row outputs on a rank; ``compute`` turns them into metrics."""

    def __init__(self, task: Task, examples: Examples) -> None:
        self.task = task
        self.examples = examples
        self.rows: list[dict[str, float]] = []
        self.nll = 0.0
        self.tokens = 0

    def add(self, out: HeadOutput, indices: list[int], valid: list[bool]) -> None:
        """Record a batch of ``examples``; ``valid`` is False for rows that only pad the last
        batch."""
        kind = self.task.config.type
        if kind in ("masked_lm", "causal_lm"):
            if all(valid):
                self.nll += float(out.loss) * out.tokens
                self.tokens += out.tokens
            return
        if kind == "embedding_distillation" and len(self.task.config.text_fields) == 1:
            return  # unlabeled single texts: nothing to score on dev
        gold = self.examples.labels
        output = out.output.detach().float()
        if kind in PAIR_INPUT_TASKS and len(self.task.config.text_fields) == 2:
            half = output.size(0) // 2
            a = torch.nn.functional.normalize(output[:half], dim=-1)
            b = torch.nn.functional.normalize(output[half:], dim=-1)
            cosine = (a * b).sum(-1)
            top1 = (a @ b.T).argmax(-1) == torch.arange(half)
            preds = [float(v) for v in cosine]
            extra = [float(v) for v in top1]
        elif kind == "classification":
            preds = [float(v) for v in output.argmax(-1)]
            extra = [0.0] * len(preds)
        else:
            preds = [float(v) for v in output]
            extra = [0.0] * len(preds)
        for i, index in enumerate(indices):
            if valid[i]:
                target = float(gold[index]) if gold is not None else float("nan")
                self.rows.append({"pred": preds[i], "gold": target, "hit": extra[i]})

    def state(self) -> dict[str, Any]:
        return {"rows": self.rows, "nll": self.nll, "tokens": self.tokens}

    def compute(self, states: list[dict[str, Any]]) -> dict[str, float]:
        """Metrics over the states gathered from every rank."""
        kind = self.task.config.type
        if kind in ("masked_lm", "causal_lm"):
            nll = sum(s["nll"] for s in states)
            tokens = sum(s["tokens"] for s in states)
            return {"loss": nll / max(tokens, 1), "perplexity": M.perplexity(nll, tokens)}
        rows = [r for s in states for r in s["rows"]]
        if not rows:
            return {}
        preds = [r["pred"] for r in rows]
        if kind == "classification":
            names = self.task.spec.label_names or []
            gold = [int(r["gold"]) for r in rows]
            return M.classification_report([int(p) for p in preds], gold, names)
        if kind == "regression":
            gold_f = [r["gold"] for r in rows]
            mse = float(np.mean((np.asarray(preds) - np.asarray(gold_f)) ** 2))
            return {
                "pearson": M.pearson(preds, gold_f),
                "spearman": M.spearman(preds, gold_f),
                "mse": mse,
            }
        result = {"recall_at_1_in_batch": float(np.mean([r["hit"] for r in rows]))}
        golds = [r["gold"] for r in rows]
        if golds and not np.isnan(golds).any():
            result["pearson"] = M.pearson(preds, golds)
            result["spearman"] = M.spearman(preds, golds)
        return result
