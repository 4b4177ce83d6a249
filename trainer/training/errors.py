"""Typed errors raised by the training package."""

from __future__ import annotations

from pathlib import Path


class TrainingError(Exception):
    """Base class for every error the trainer reports to a user."""


class ConfigError(TrainingError):
    """The run configuration is invalid or inconsistent."""


class DataError(TrainingError):
    """A data file is missing or a row in it cannot be read."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class CheckpointError(TrainingError):
    """A checkpoint cannot be found, written or resumed from."""


class ExportParityError(TrainingError):
    """An exported model does not reproduce the trained model's outputs."""

    def __init__(self, task: str, max_abs_diff: float, atol: float) -> None:
        self.task = task
        self.max_abs_diff = max_abs_diff
        self.atol = atol
        super().__init__(
            f"export of task {task!r} differs from the trained model: "
            f"max |diff| = {max_abs_diff:.3g} > atol = {atol:.3g}"
        )
