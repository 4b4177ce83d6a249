"""The repository spec: which checkpoints become which Triton models, and how.

Example::

    models:
      - name: minilm
        task: embed
        checkpoint: ./checkpoints/all-MiniLM-L6-v2   # relative to this file
        target: cpu
        max_length: 256
        buckets: [16, 32, 64, 128, 256]
        max_batch_size: 32
        dynamic_batching: {max_queue_delay_us: 0}
        instances: 1
        parity: {atol: 1.0e-4, min_cosine: 0.9999, dataset: {path: dev.tsv, column: sentence}}
        quantize: none            # or int8_dynamic, or {method: int8_dynamic, min_cosine: 0.99}
        tensorrt: {fp16: true, atol: 2.0e-2, min_cosine: 0.999}   # target tensorrt only

Task ``classify`` serves sequence classifiers (softmax probabilities per label) and
regression heads (``problem_type: regression`` or one output: the raw predicted value,
reported as the score of its single label). Checkpoints trained on sentence pairs (a
cross-encoder, e.g. STS-B) take a second text per input (``text_pairs``; read from the
trainer's ``lmforge_tasks.json`` when not set).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from lmforge_core.strict import StrictModel, load_yaml_mapping, validate
from trainer.errors import SpecError
from trainer.repository.generation_spec import GenerationSpec

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
TENSORRT_BUCKETS = (16, 32, 64, 128)
TASKS = ("embed", "classify", "generate")
TARGETS = ("cpu", "onnxruntime", "tensorrt")

DEFAULT_PARITY_SENTENCES: tuple[str, ...] = (
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "a gripping , funny and ultimately moving film .",
    "the plot is thin and the acting wooden ; i left before the end .",
    "Triton serves many models at once, each with its own dynamic batcher and instance group.",
    "ok",
    "What is the capital of France?",
    "It rained all day, so we stayed in, read books, and cooked a long, slow dinner together.",
)


class DynamicBatching(StrictModel):
    """Triton's dynamic batcher on the composing models (``enabled: false`` leaves batching
    across requests to the gateway alone)."""

    enabled: bool = True
    # 0: batch what is already waiting, never hold a request for company (a lone request
    # would pay the whole delay; the gateway in front does the waiting-for-company itself)
    max_queue_delay_us: int = Field(default=0, ge=0, le=10_000_000)
    preferred_batch_sizes: tuple[Annotated[int, Field(ge=1)], ...] = ()


class ParityDataset(StrictModel):
    """Sentences for the parity check: one named column of a TSV/CSV/JSONL file."""

    path: Path
    column: str = "sentence"
    pair_column: str | None = Field(default=None, description="second text, for pair models")
    limit: int = Field(default=64, ge=1, le=10_000)


class ParitySpec(StrictModel):
    atol: float = Field(default=1e-4, gt=0)
    min_cosine: float = Field(default=0.9999, gt=0, le=1)
    sentences: tuple[str, ...] = ()
    dataset: ParityDataset | None = None

    @field_validator("sentences")
    @classmethod
    def _no_empty_sentences(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s.strip() for s in value):
            raise ValueError("parity sentences must not be empty")
        return value


class CalibrationSpec(StrictModel):
    """Static INT8: activation ranges measured on real inputs."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    samples: int = Field(default=128, ge=1, le=100_000)
    percentile: float = Field(default=99.999, gt=90, le=100)


class MetricGate(StrictModel):
    """The task metric a compressed graph must keep, measured against its FP32 source on a
    held-back labelled slice: accuracy (classifiers), Spearman of the predicted score
    (regression) or of the embeddings' cosine (embedders, on scored sentence pairs)."""

    path: Path
    text_column: str = "sentence"
    pair_column: str | None = None  # embedders: the second sentence; pair classifiers: too
    label_column: str = "label"
    limit: int = Field(default=500, ge=10, le=100_000)
    max_drop: float = Field(default=0.01, ge=0, le=1)  # absolute: FP32 metric - INT8 metric


class QuantizeSpec(StrictModel):
    method: Literal["none", "int8_dynamic", "int8_static"] = "none"
    per_channel: bool = True
    calibration: CalibrationSpec = CalibrationSpec()
    min_cosine: float = Field(default=0.99, gt=0, le=1)  # output-level gate vs FP32
    max_abs_diff: float = Field(default=0.05, gt=0)  # gate for one-column (regression) outputs
    gate: MetricGate | None = None  # the task-metric gate (recommended)
    # serve each row alone at its own length (default: for int8_dynamic, whose per-batch
    # activation scales would otherwise make a row's scores depend on its batch neighbours)
    row_wise: bool | None = None

    @property
    def serves_row_wise(self) -> bool:
        return self.method == "int8_dynamic" if self.row_wise is None else self.row_wise


class TensorRTSpec(StrictModel):
    """Engine precision and the engine-vs-PyTorch parity gate (target ``tensorrt`` only).

    FP16 kernels drift more than the FP32 ONNX export, so the engine has its own tolerances;
    they are what the build enforces and reports, never loosened behind the spec's back.
    """

    fp16: bool = True
    atol: float = Field(default=2e-2, gt=0)
    min_cosine: float = Field(default=0.999, gt=0, le=1)
    workspace_gb: float = Field(default=2.0, gt=0, le=256)


class ModelSpec(StrictModel):
    name: str
    task: Literal["embed", "classify", "generate"]
    checkpoint: Path
    target: Literal["cpu", "onnxruntime", "tensorrt"] = "cpu"
    max_length: int = Field(default=256, ge=2, le=8192)
    # pad lengths; "exact" pads each batch to its longest row (ONNX Runtime takes any shape, and
    # padding to coarse buckets costs up to a third of the throughput on short sentences);
    # null: the target's default, exact for cpu/onnxruntime, (16, 32, 64, 128) for tensorrt
    buckets: tuple[Annotated[int, Field(ge=1)], ...] | Literal["exact"] | None = None
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    dynamic_batching: DynamicBatching = DynamicBatching()
    instances: int = Field(default=1, ge=1, le=64)
    cpu_threads: int = Field(default=0, ge=0, le=256)  # ONNX Runtime intra-op; 0 = its choice
    labels: tuple[str, ...] | None = None  # classify: overrides config.id2label
    # fuse the transformer's ops (attention, layer norm, GELU) with ONNX Runtime's optimizer
    # before serving/quantizing: cpu and onnxruntime targets; parity is checked after
    optimize: bool = True
    text_pairs: bool | None = None  # None: from the checkpoint's lmforge_tasks.json
    parity: ParitySpec = ParitySpec()
    quantize: QuantizeSpec = QuantizeSpec()
    tensorrt: TensorRTSpec = TensorRTSpec()
    generation: GenerationSpec = GenerationSpec()  # task generate only

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"model name {value!r} must be lowercase letters, digits, '_' or '-', "
                "starting with a letter"
            )
        return value

    @field_validator("quantize", mode="before")
    @classmethod
    def _quantize_shorthand(cls, value: Any) -> Any:
        if value is None:
            return {"method": "none"}
        if isinstance(value, str):
            return {"method": value}
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> ModelSpec:
        if isinstance(self.buckets, tuple):
            too_long = [b for b in self.buckets if b > self.max_length]
            if too_long:
                raise ValueError(
                    f"buckets {list(too_long)} exceed max_length {self.max_length} "
                    f"(model {self.name!r})"
                )
            if list(self.buckets) != sorted(set(self.buckets)):
                raise ValueError(f"buckets {list(self.buckets)} must be strictly increasing")
        if self.buckets == "exact" and self.target == "tensorrt":
            raise ValueError(
                f"target tensorrt needs length buckets (one optimization profile each); "
                f"model {self.name!r} has buckets 'exact'"
            )
        big = [s for s in self.dynamic_batching.preferred_batch_sizes if s > self.max_batch_size]
        if big:
            raise ValueError(
                f"preferred_batch_sizes {big} exceed max_batch_size {self.max_batch_size} "
                f"(model {self.name!r})"
            )
        if self.quantize.method != "none" and self.target == "tensorrt":
            raise ValueError(
                f"quantize {self.quantize.method} is an ONNX Runtime method; target tensorrt "
                f"(model {self.name!r}) builds its own reduced-precision engine"
            )
        if "tensorrt" in self.model_fields_set and self.target != "tensorrt":
            raise ValueError(
                f"tensorrt settings apply to target tensorrt; model {self.name!r} has target "
                f"{self.target}"
            )
        if self.task == "generate":
            self.generation.check_model(
                self.name, self.target, self.max_length, self.quantize.method
            )
        elif "generation" in self.model_fields_set:
            raise ValueError(f"generation settings are for task generate, model {self.name!r}")
        if self.text_pairs and self.task != "classify":
            raise ValueError(
                f"text_pairs is for task classify (cross-encoders), model {self.name!r} is "
                f"{self.task}"
            )
        if self.labels is not None and self.task != "classify":
            raise ValueError(
                f"labels are only for task classify, model {self.name!r} is {self.task}"
            )
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels {list(self.labels)} contain duplicates")
        return self

    @property
    def all_buckets(self) -> tuple[int, ...]:
        """The buckets the tokenizer pads to: the spec's plus ``max_length``; ``()`` for exact
        padding to each batch's longest row."""
        buckets = self.buckets
        if buckets is None:
            buckets = TENSORRT_BUCKETS if self.target == "tensorrt" else "exact"
        if buckets == "exact":
            return ()
        return tuple(sorted({*(b for b in buckets if b <= self.max_length), self.max_length}))


class RepositorySpec(StrictModel):
    models: tuple[ModelSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> RepositorySpec:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {dupes}")
        derived = {n + suffix for n in names for suffix in ("_tokenize", "_encoder")}
        clash = sorted(set(names) & derived)
        if clash:
            raise ValueError(f"model names {clash} clash with generated composing-model names")
        return self

    def resolve_paths(self, base: Path) -> RepositorySpec:
        """Make relative checkpoint and dataset paths relative to ``base`` (the spec's folder)."""

        def fix(path: Path) -> Path:
            return path if path.is_absolute() else (base / path).resolve()

        models = []
        for m in self.models:
            parity = m.parity
            if parity.dataset is not None:
                dataset = parity.dataset.model_copy(update={"path": fix(parity.dataset.path)})
                parity = parity.model_copy(update={"dataset": dataset})
            quantize = m.quantize
            if quantize.gate is not None:
                gate = quantize.gate.model_copy(update={"path": fix(quantize.gate.path)})
                quantize = quantize.model_copy(update={"gate": gate})
            models.append(
                m.model_copy(
                    update={"checkpoint": fix(m.checkpoint), "parity": parity, "quantize": quantize}
                )
            )
        return self.model_copy(update={"models": tuple(models)})


def parse_spec(
    data: Any, base: Path | None = None, source: str = "repository spec"
) -> RepositorySpec:
    """Validate a plain mapping; raise :class:`SpecError` naming every problem."""
    spec = validate(RepositorySpec, data, source=source, what="repository spec", error=SpecError)
    return spec.resolve_paths(base) if base is not None else spec


def load_spec(path: Path) -> RepositorySpec:
    """Read and validate a YAML spec; relative paths are taken from the file's folder."""
    data = load_yaml_mapping(path, what="repository spec", error=SpecError)
    return parse_spec(data, base=Path(path).resolve().parent, source=str(path))
