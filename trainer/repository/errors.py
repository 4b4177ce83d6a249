"""Errors raised while building a model repository."""

from __future__ import annotations


class RepositoryError(RuntimeError):
    """Base class of the repository builder's errors."""


class SpecError(RepositoryError, ValueError):
    """The repository spec is invalid (file missing, bad YAML, failed validation)."""


class ModelConfigError(RepositoryError):
    """A generated ``config.pbtxt`` does not satisfy Triton's ``model_config.proto``."""

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        self.detail = detail
        super().__init__(f"invalid Triton config for model {model!r}: {detail}")


class ExportError(RepositoryError):
    """A checkpoint could not be exported."""


class ExportParityError(RepositoryError):
    """The exported graph's outputs differ from PyTorch's beyond the spec's thresholds."""

    def __init__(
        self,
        max_abs_diff: float,
        atol: float,
        min_cosine: float | None = None,
        cosine_threshold: float | None = None,
        model: str = "",
    ) -> None:
        self.max_abs_diff = max_abs_diff
        self.atol = atol
        self.min_cosine = min_cosine
        self.cosine_threshold = cosine_threshold
        self.model = model
        parts = [f"max |diff| {max_abs_diff:.3g} (atol {atol:.3g})"]
        if min_cosine is not None and cosine_threshold is not None:
            parts.append(f"min cosine {min_cosine:.6f} (threshold {cosine_threshold:.6f})")
        where = f" for {model!r}" if model else ""
        super().__init__(f"export parity failed{where}: " + ", ".join(parts))


class QuantizationGateError(RepositoryError):
    """The quantized graph drifted from the FP32 graph beyond the spec's gate."""

    def __init__(self, min_cosine: float, threshold: float, model: str = "") -> None:
        self.min_cosine = min_cosine
        self.threshold = threshold
        where = f" for {model!r}" if model else ""
        super().__init__(
            f"int8 quantization rejected{where}: min cosine to FP32 {min_cosine:.6f} "
            f"< gate {threshold:.6f}"
        )


class TensorRTUnavailableError(RepositoryError):
    """The ``tensorrt`` target needs TensorRT and a CUDA GPU, and this machine lacks one."""
