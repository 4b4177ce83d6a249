"""A quick single-process fine-tune of an encoder into a sentence classifier (plain PyTorch).

Used for the demo's ``sentiment`` model: a subset of SST-2 train, one epoch, AdamW with
linear warm-up/decay, length-grouped batches (sorted within shuffled chunks to cut padding).
It ends by measuring accuracy on the dev file; that number is what gets reported.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer.repository.errors import RepositoryError

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


class DatasetError(RepositoryError):
    """A training or evaluation file is missing or malformed."""


class AccuracyGateError(RepositoryError):
    """The fine-tuned classifier did not reach the required dev accuracy."""

    def __init__(self, accuracy: float, required: float) -> None:
        self.accuracy = accuracy
        self.required = required
        super().__init__(f"dev accuracy {accuracy:.4f} is below the required {required:.4f}")


@dataclass(frozen=True)
class FinetuneRecipe:
    base: Path
    train_file: Path
    dev_file: Path
    labels: tuple[str, ...] = ("negative", "positive")
    train_rows: int = 16_000
    epochs: int = 1
    learning_rate: float = 8e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    batch_size: int = 32
    max_length: int = 64
    seed: int = 13
    # the word-embedding table is half of a MiniLM's weights: freezing it halves the
    # optimizer's work and barely moves accuracy on a short fine-tune
    freeze_word_embeddings: bool = True

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


def read_labelled_tsv(path: Path, num_labels: int) -> list[tuple[str, int]]:
    """``text<TAB>label`` rows after a header line; labels are integers < ``num_labels``."""
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    rows = []
    with handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader, None)
        for line_no, row in enumerate(reader, start=2):
            if len(row) < 2:
                raise DatasetError(f"{path}:{line_no}: expected text<TAB>label, got {row!r}")
            try:
                label = int(row[1])
            except ValueError as exc:
                raise DatasetError(f"{path}:{line_no}: label {row[1]!r} is not an integer") from exc
            if not 0 <= label < num_labels:
                raise DatasetError(f"{path}:{line_no}: label {label} outside 0..{num_labels - 1}")
            rows.append((row[0], label))
    if not rows:
        raise DatasetError(f"{path} has no rows")
    return rows


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, chunk_batches: int = 50
) -> list[list[int]]:
    """Indices in batches of similar length: shuffle, sort within chunks, shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(encoded: list[list[int]], indices: Sequence[int], pad_id: int) -> Any:
    import torch

    width = max(len(encoded[i]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
        mask[row, : len(encoded[i])] = 1
    return ids, mask


def evaluate_accuracy(
    model: Any, tokenizer: Any, rows: Sequence[tuple[str, int]], max_length: int
) -> float:
    import torch

    encoded = [tokenizer.encode(text).ids[:max_length] for text, _ in rows]
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i]))
    correct = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            ids, mask = _collate(encoded, batch, 0)
            predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(dim=-1)
            correct += sum(
                int(p) == rows[i][1] for p, i in zip(predicted.tolist(), batch, strict=True)
            )
    return correct / len(rows)


def finetune_classifier(recipe: FinetuneRecipe, out_dir: Path) -> dict[str, Any]:
    """Train, evaluate on the dev file and save an HF checkpoint plus ``metrics.json``."""
    import torch
    from tokenizers import Tokenizer
    from tqdm import tqdm
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

    started = time.perf_counter()
    rng = random.Random(recipe.seed)
    torch.manual_seed(recipe.seed)
    num_labels = len(recipe.labels)
    train = read_labelled_tsv(recipe.train_file, num_labels)
    dev = read_labelled_tsv(recipe.dev_file, num_labels)
    if recipe.train_rows < len(train):
        train = rng.sample(train, recipe.train_rows)

    tokenizer = Tokenizer.from_file(str(recipe.base / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encoded = [tokenizer.encode(text).ids[: recipe.max_length] for text, _ in train]
    labels = torch.tensor([label for _, label in train])

    model = AutoModelForSequenceClassification.from_pretrained(
        recipe.base,
        num_labels=num_labels,
        id2label=dict(enumerate(recipe.labels)),
        label2id={name: i for i, name in enumerate(recipe.labels)},
    )
    if recipe.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in trainable if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.learning_rate,
    )
    steps = recipe.epochs * -(-len(train) // recipe.batch_size)
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(steps * recipe.warmup_fraction), steps
    )

    model.train()
    progress = tqdm(total=steps, desc="fine-tune sentiment", unit="batch")
    running = 0.0
    for _epoch in range(recipe.epochs):
        for step, batch in enumerate(
            length_grouped_batches([len(e) for e in encoded], recipe.batch_size, rng)
        ):
            ids, mask = _collate(encoded, batch, 0)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels[batch]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
            progress.set_postfix(loss=f"{running:.3f}")
            progress.update(1)
    progress.close()
    train_seconds = time.perf_counter() - started

    accuracy = evaluate_accuracy(model, tokenizer, dev, recipe.max_length * 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    for name in _TOKENIZER_FILES:
        if (recipe.base / name).exists():
            shutil.copy2(recipe.base / name, out_dir / name)
    metrics = {
        "dev_accuracy": round(accuracy, 4),
        "dev_rows": len(dev),
        "train_rows": len(train),
        "train_steps": steps,
        "train_seconds": round(train_seconds, 1),
        "final_loss": round(running, 4),
        "recipe": recipe.as_dict(),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    logger.info(
        "fine-tuned %d rows in %.0f s: SST-2 dev accuracy %.4f", len(train), train_seconds, accuracy
    )
    return metrics
