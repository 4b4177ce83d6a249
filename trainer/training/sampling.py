"""Pure sampling components: task mixing, class re-weighting and resumable index streams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trainer.errors import ConfigError


def task_probabilities(sizes: Sequence[int], strategy: str, temperature: float = 1.0) -> np.ndarray:
    """Mixing probabilities: p_i ∝ n_i (proportional), n_i^(1/T) (temperature), 1 (uniform)."""
    counts = np.asarray(sizes, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or np.any(counts <= 0):
        raise ConfigError(f"every task needs at least one training row, got sizes {list(sizes)}")
    if strategy == "proportional":
        scores = counts
    elif strategy == "temperature":
        if temperature <= 0:
            raise ConfigError(f"sampling temperature must be > 0, got {temperature}")
        scores = counts ** (1.0 / temperature)
    elif strategy == "uniform":
        scores = np.ones_like(counts)
    else:
        raise ConfigError(f"unknown sampling strategy {strategy!r}")
    return scores / scores.sum()


class TaskSampler:
    """Draws the task of each micro-step; identical on every rank for the same seed."""

    def __init__(self, probabilities: Sequence[float] | np.ndarray, seed: int) -> None:
        probs = np.asarray(probabilities, dtype=np.float64)
        if probs.ndim != 1 or probs.size == 0 or np.any(probs < 0) or probs.sum() <= 0:
            raise ConfigError(f"invalid task probabilities {list(probabilities)}")
        self.probabilities = probs / probs.sum()
        self._rng = np.random.default_rng([seed, 0x7A5C])

    def next(self) -> int:
        if self.probabilities.size == 1:
            return 0
        return int(self._rng.choice(self.probabilities.size, p=self.probabilities))

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["bit_generator"]


def class_weights(labels: Sequence[int], num_classes: int, power: float = 1.0) -> np.ndarray:
    """Per-class weights ∝ (1 / n_c)^power, scaled so the average weight per example is 1."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(
        np.float64
    )
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = counts[present] ** (-power)
    mean = (weights * counts).sum() / counts.sum()
    return weights / mean


class IndexStream:
    """Yields this rank's example indices for successive micro-batches of one task.

    Each epoch's order is a pure function of (seed, task, epoch): a permutation, or a draw
    with replacement by ``example_weights`` (oversampling). Rank r takes the r-th slice of
    every global batch, so the state that must survive a restart is ``(epoch, cursor)``.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        seed: int,
        task_index: int,
        rank: int = 0,
        world_size: int = 1,
        example_weights: np.ndarray | None = None,
        lengths: np.ndarray | None = None,
        group_size: int = 64,
    ) -> None:
        if size <= 0 or batch_size <= 0 or not 0 <= rank < world_size:
            raise ConfigError(
                f"invalid stream: size={size} batch_size={batch_size} rank={rank}/{world_size}"
            )
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.task_index = task_index
        self.rank = rank
        self.world_size = world_size
        self.example_weights = example_weights
        self.lengths = lengths
        self.group_size = group_size
        self.epoch = 0
        self.cursor = 0
        self._order = self._epoch_order(0)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def _epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.task_index, epoch])
        if self.example_weights is None:
            order = rng.permutation(self.size)
        else:
            p = self.example_weights / self.example_weights.sum()
            order = rng.choice(self.size, size=self.size, replace=True, p=p)
        if order.size < self.global_batch:  # tiny task: repeat so one global batch fits
            order = np.resize(order, self.global_batch)
        if self.lengths is not None:
            order = self._group_by_length(order, rng)
        return order

    def _group_by_length(self, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sort windows of ``group_size`` global batches by length, then shuffle the batches.

        Batches hold examples of similar length (less padding); their order stays random.
        """
        lengths = self.lengths if self.lengths is not None else np.zeros(self.size, np.int64)
        gb = self.global_batch
        usable = order.size - order.size % gb
        window = gb * self.group_size
        batches = []
        for start in range(0, usable, window):
            chunk = order[start : min(start + window, usable)]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i : i + gb] for i in range(0, chunk.size, gb)]
        shuffled = [batches[i] for i in rng.permutation(len(batches))]
        return np.concatenate([*shuffled, order[usable:]])

    def next_batch(self) -> list[int]:
        if self.cursor + self.global_batch > self._order.size:
            self.epoch += 1
            self.cursor = 0
            self._order = self._epoch_order(self.epoch)
        start = self.cursor + self.rank * self.batch_size
        batch = self._order[start : start + self.batch_size]
        self.cursor += self.global_batch
        return [int(i) for i in batch]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.cursor = int(state["cursor"])
        self._order = self._epoch_order(self.epoch)
