"""The trainer's errors: one hierarchy for training, compression, export and repositories.

Every error the trainer reports to a user is a :class:`TrainerError`; command-line handlers
catch that base class and print its message. Gates (export parity, quantization accuracy)
carry the measured number and the threshold it missed.
"""

from __future__ import annotations

from pathlib import Path


class TrainerError(Exception):
    """Base class of every error the trainer reports to a user."""


class ConfigError(TrainerError, ValueError):
    """A configuration (run config, repository spec, pipeline) is invalid or inconsistent."""


class SpecError(ConfigError):
    """A repository spec is invalid, or a checkpoint does not fit what the spec asks."""


class DataError(TrainerError):
    """A data file is missing or a row in it cannot be read."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class CheckpointError(TrainerError):
    """A checkpoint cannot be found, written, mapped or resumed from."""


class RepositoryError(TrainerError):
    """A model repository cannot be written."""


class ModelConfigError(RepositoryError):
    """A generated ``config.pbtxt`` does not satisfy Triton's ``model_config.proto``."""

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        self.detail = detail
        super().__init__(f"invalid Triton config for model {model!r}: {detail}")


class ExportError(TrainerError):
    """A model could not be exported (ONNX, TensorRT, HF folder)."""


class TensorRTUnavailableError(ExportError):
    """The ``tensorrt`` target needs TensorRT and a CUDA GPU, and this machine lacks one."""


class ExportParityError(ExportError):
    """An exported model does not reproduce its source's outputs within the tolerances."""

    def __init__(
        self,
        max_abs_diff: float,
        atol: float,
        *,
        min_cosine: float | None = None,
        cosine_threshold: float | None = None,
        what: str = "",
    ) -> None:
        self.max_abs_diff = max_abs_diff
        self.atol = atol
        self.min_cosine = min_cosine
        self.cosine_threshold = cosine_threshold
        self.what = what
        parts = [f"max |diff| {max_abs_diff:.3g} (atol {atol:.3g})"]
        if min_cosine is not None and cosine_threshold is not None:
            parts.append(f"min cosine {min_cosine:.6f} (threshold {cosine_threshold:.6f})")
        where = f" for {what}" if what else ""
        super().__init__(f"export parity failed{where}: " + ", ".join(parts))


class GateError(TrainerError):
    """A compressed or trained model missed its quality gate (accuracy, Spearman, cosine)."""

    def __init__(self, metric: str, value: float, required: float, what: str = "") -> None:
        self.metric = metric
        self.value = value
        self.required = required
        self.what = what
        where = f"{what}: " if what else ""
        super().__init__(f"{where}{metric} {value:.4f} misses the gate {required:.4f}")
