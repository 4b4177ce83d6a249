"""The run configuration: one typed, strictly validated root object loaded from YAML."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from lmforge_core.strict import StrictModel, load_yaml_mapping, validate
from trainer.errors import ConfigError

TaskType = Literal[
    "classification",
    "regression",
    "masked_lm",
    "causal_lm",
    "pair_embedding",
    "embedding_distillation",
]
ENCODER_TASKS: frozenset[str] = frozenset(
    {"classification", "regression", "masked_lm", "pair_embedding", "embedding_distillation"}
)
#: task types whose sentence pairs are two separate inputs (not one cross-encoded row)
PAIR_INPUT_TASKS: frozenset[str] = frozenset({"pair_embedding", "embedding_distillation"})
PACKAGE_SCHEME = "pkg://"


class ArchitectureConfig(StrictModel):
    """A model built from a config (random weights), for from-scratch runs and tests."""

    kind: Literal["bert", "gpt2"]
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    intermediate_size: int | None = Field(None, ge=8)
    max_positions: int = Field(512, ge=16)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ArchitectureConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        return self


class StudentConfig(StrictModel):
    """A smaller encoder built from the distillation teacher's: its embeddings and the teacher
    layers listed here, in order (e.g. ``[0, 2, 4]`` keeps every other layer of six)."""

    layers: tuple[int, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> StudentConfig:
        if len(set(self.layers)) != len(self.layers) or any(i < 0 for i in self.layers):
            raise ValueError(f"student layers {list(self.layers)} must be distinct and >= 0")
        return self


class ModelConfig(StrictModel):
    """Exactly one source of weights: a pretrained HF folder (or a trainer bundle, whose task
    heads are loaded too), an architecture (random weights), or a student of the
    distillation teacher. A tokenizer folder in every case (default: the weights' folder)."""

    pretrained: Path | None = None
    architecture: ArchitectureConfig | None = None
    student: StudentConfig | None = None
    tokenizer: Path | None = None
    max_length: int = Field(128, ge=8)
    # parameter name prefixes kept fixed, e.g. ["encoder.embeddings.word_embeddings"]: the
    # word-embedding table is half of a small encoder's weights and barely moves in a fine-tune
    freeze: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        sources = [self.pretrained, self.architecture, self.student]
        if sum(s is not None for s in sources) != 1:
            raise ValueError(
                "set exactly one of model.pretrained, model.architecture and model.student"
            )
        if self.architecture is not None and self.tokenizer is None:
            raise ValueError("model.tokenizer is required when model.architecture is set")
        return self

    @property
    def tokenizer_path(self) -> Path:
        path = self.tokenizer if self.tokenizer is not None else self.pretrained
        if path is None:  # a student's default is its teacher's folder (RunConfig fills it)
            raise ConfigError("no tokenizer folder configured")
        return path


class AugmentConfig(StrictModel):
    """Perturbed training rows as transfer data for a single-sentence classification task
    (``trainer/training/augment.py``): ``probability`` of a row being perturbed, then per
    word piece the chance of a swap with its neighbour, of the mask token, of deletion."""

    probability: float = Field(0.5, ge=0.0, le=1.0)
    token_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    mask: float = Field(0.1, ge=0.0, lt=1.0)
    swap: float = Field(0.05, ge=0.0, lt=1.0)


class DistillConfig(StrictModel):
    """Knowledge distillation from a trained teacher (Hinton et al. 2015, plus optional
    hidden-state and attention transfer as in TinyBERT).

    ``teacher`` is a trainer bundle (a run's ``model/`` or ``best/``: the same tasks and heads
    as the student) or, for ``embedding_distillation`` tasks, any HF encoder folder (e.g.
    all-MiniLM-L6-v2). Classification: ``alpha`` * hard-label loss + (1 - ``alpha``) * T^2 *
    KL(teacher || student) at temperature T; regression: the teacher's score as a soft target;
    embedding distillation: MSE or cosine distance to the teacher's sentence embeddings.
    """

    teacher: Path
    temperature: float = Field(2.0, gt=0.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    hidden_weight: float = Field(0.0, ge=0.0)
    attention_weight: float = Field(0.0, ge=0.0)
    layer_map: dict[int, int] | None = None  # student layer -> teacher layer
    embedding_loss: Literal["mse", "cosine"] = "mse"
    # classification tasks of one text field: rows perturbed and trained on soft targets only
    augment: AugmentConfig | None = None


class DataSource(StrictModel):
    path: Path
    format: Literal["auto", "tsv", "csv", "jsonl"] = "auto"
    on_error: Literal["fail", "skip"] = "fail"
    max_rows: int | None = Field(None, ge=1)


VALIDATION = "validation"
DEV = "dev"


class ValidationSplit(StrictModel):
    """Rows held out of a task's training file for checkpoint selection and early stopping,
    so that dev (or test) is evaluated once, at the end, on data nothing was chosen on.

    Exactly one of ``rows`` and ``fraction``; classification splits are stratified by label.
    The same ``seed`` and file give the same split on every rank and every resume."""

    rows: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0.0, le=0.5)
    seed: int = 0

    @model_validator(mode="after")
    def _one_size(self) -> ValidationSplit:
        if (self.rows is None) == (self.fraction is None):
            raise ValueError("set exactly one of validation.rows and validation.fraction")
        return self


class ImbalanceConfig(StrictModel):
    """Class-imbalance handling for a classification task.

    ``class_weight`` and ``oversample`` weight class c by ``(1 / n_c) ** power``
    (``power=1``: inverse frequency, ``0.5``: inverse square root); ``focal`` uses ``gamma``
    and, when ``power > 0``, the same class weights as alpha.
    """

    method: Literal["none", "class_weight", "focal", "oversample"] = "none"
    gamma: float = Field(2.0, ge=0.0)
    power: float = Field(1.0, ge=0.0, le=1.0)


class TaskConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    type: TaskType
    train: DataSource
    validation: ValidationSplit | None = None
    dev: DataSource | None = None
    text_fields: list[str] = Field(min_length=1, max_length=2)
    label_field: str | None = None
    labels: list[str] | None = Field(None, min_length=2)
    imbalance: ImbalanceConfig = Field(default_factory=ImbalanceConfig)
    loss_weight: float = Field(1.0, gt=0.0)
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    contrastive_scale: float = Field(20.0, gt=0.0)
    min_pair_score: float | None = None

    @model_validator(mode="after")
    def _fields_fit_type(self) -> TaskConfig:
        needs_label = self.type in ("classification", "regression")
        if needs_label and self.label_field is None:
            raise ValueError(f"task {self.name!r} of type {self.type} needs label_field")
        if self.type in ("masked_lm", "causal_lm") and len(self.text_fields) != 1:
            raise ValueError(f"task {self.name!r} of type {self.type} takes one text field")
        if self.type == "pair_embedding" and len(self.text_fields) != 2:
            raise ValueError(f"task {self.name!r} of type pair_embedding takes two text fields")
        if self.type != "classification" and self.imbalance.method != "none":
            raise ValueError(
                f"task {self.name!r}: imbalance.method={self.imbalance.method} "
                f"only applies to classification, not {self.type}"
            )
        if self.labels is not None and self.type != "classification":
            raise ValueError(f"task {self.name!r}: labels only apply to classification")
        if (
            self.type == "embedding_distillation"
            and self.label_field is not None
            and len(self.text_fields) != 2
        ):
            raise ValueError(
                f"task {self.name!r}: a label_field on embedding_distillation scores "
                "sentence pairs (dev Spearman): give two text_fields"
            )
        if self.min_pair_score is not None and self.type != "pair_embedding":
            raise ValueError(f"task {self.name!r}: min_pair_score only applies to pair_embedding")
        return self


class SamplingConfig(StrictModel):
    """How tasks are mixed: p_i ∝ n_i (proportional), n_i^(1/T) (temperature), 1 (uniform)."""

    strategy: Literal["proportional", "temperature", "uniform"] = "temperature"
    temperature: float = Field(2.0, gt=0.0)


class DeepSpeedConfig(StrictModel):
    """``precision``: ``auto`` trains in bf16 where the processor computes it natively
    (AVX512-BF16/AMX on CPU, Ampere+ GPUs) and in fp32 elsewhere; ``bf16`` on a CPU is torch
    autocast over fp32 master weights (faster than DeepSpeed's bf16 optimizer there);
    ``fp16`` needs a GPU."""

    zero_stage: int = Field(0, ge=0, le=3)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    micro_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_clipping: float = Field(1.0, ge=0.0)


class OptimizerConfig(StrictModel):
    lr: float = Field(5e-5, gt=0.0)
    head_lr: float | None = Field(None, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int | None = Field(None, ge=0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    # torch's fused AdamW: one kernel over all parameters; on CPU the step is ~3x faster
    fused: bool = True


class LoopConfig(StrictModel):
    """Length of the run and its cadences, counted in optimizer steps (0 = never)."""

    max_steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0.0)
    eval_every: int = Field(0, ge=0)
    save_every: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    group_by_length: bool = False
    best_metric: str | None = None
    best_mode: Literal["max", "min"] = "max"
    # the split best_metric is read on: the task's validation split (carved from its training
    # file), or - only when a config says so - its dev split, which then no longer measures
    # the selected model on unseen data
    select_on: Literal["validation", "dev"] = "validation"
    # stop after this many evaluations in a row without a better best_metric
    early_stopping: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_length(self) -> LoopConfig:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of training.max_steps and training.epochs")
        if self.early_stopping is not None and (self.best_metric is None or not self.eval_every):
            raise ValueError("training.early_stopping needs best_metric and eval_every")
        return self


class RunConfig(StrictModel):
    model: ModelConfig
    tasks: list[TaskConfig] = Field(min_length=1)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: LoopConfig
    output_dir: Path
    seed: int = 0
    distill: DistillConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        arch = self.model.architecture
        kind = arch.kind if arch is not None else None
        for task in self.tasks:
            if kind == "gpt2" and task.type in ENCODER_TASKS:
                raise ValueError(
                    f"task {task.name!r} ({task.type}) needs an encoder, "
                    "but model.architecture.kind is gpt2"
                )
            if kind == "bert" and task.type == "causal_lm":
                raise ValueError(
                    f"task {task.name!r} (causal_lm) needs a decoder, "
                    "but model.architecture.kind is bert"
                )
        distilling = [t.name for t in self.tasks if t.type == "embedding_distillation"]
        if distilling and self.distill is None:
            raise ValueError(f"tasks {distilling} (embedding_distillation) need a distill section")
        if self.model.student is not None and self.distill is None:
            raise ValueError("model.student is built from distill.teacher: add a distill section")
        best = self.training.best_metric
        if best is not None:
            task_name, _, metric = best.partition("/")
            if task_name not in names or not metric:
                raise ValueError(
                    f"training.best_metric={best!r} must be 'TASK/METRIC' with TASK one of {names}"
                )
            task = self.tasks[names.index(task_name)]
            if self.training.select_on == VALIDATION and task.validation is None:
                raise ValueError(
                    f"training.best_metric={best!r} selects checkpoints, and task "
                    f"{task_name!r} has no validation split: add "
                    f"tasks[{task_name}].validation (e.g. {{fraction: 0.05}}) so that dev "
                    "stays unseen, or set training.select_on: dev to select on dev knowingly"
                )
            if self.training.select_on == DEV and task.dev is None:
                raise ValueError(f"training.select_on: dev, but task {task_name!r} has no dev")
        return self

    def watched_split(self, task: TaskConfig) -> str:
        """The split a task is evaluated on during training: its validation split when it
        has one (and selection is not told to use dev), else dev."""
        if task.validation is not None and self.training.select_on == VALIDATION:
            return VALIDATION
        return DEV

    @property
    def tokenizer_path(self) -> Path:
        """The tokenizer folder: the model's, or a student's teacher's."""
        if self.model.tokenizer is None and self.model.student is not None:
            if self.distill is None:  # excluded by the validator
                raise ConfigError("a student needs distill.teacher")
            return self.distill.teacher
        return self.model.tokenizer_path

    def task(self, name: str) -> TaskConfig:
        for task in self.tasks:
            if task.name == name:
                return task
        raise ConfigError(f"no task named {name!r}; tasks are {[t.name for t in self.tasks]}")


def resolve_path(value: str, base: Path) -> str:
    if value.startswith(PACKAGE_SCHEME):
        package, _, rest = value[len(PACKAGE_SCHEME) :].partition("/")
        spec = importlib.util.find_spec(package)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"{value}: package {package!r} is not installed")
        return str(Path(next(iter(spec.submodule_search_locations))) / rest)
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    return str(path if path.is_absolute() else (base / path).resolve())


_PATH_KEYS = {"pretrained", "tokenizer", "path", "output_dir", "teacher"}


def _resolve_paths(node: Any, base: Path) -> Any:
    if isinstance(node, dict):
        return {
            key: resolve_path(value, base)
            if key in _PATH_KEYS and isinstance(value, str)
            else _resolve_paths(value, base)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_resolve_paths(item, base) for item in node]
    return node


def parse_config(data: Any, base_dir: Path, source: str = "<config>") -> RunConfig:
    """Validate a mapping; relative paths are resolved against ``base_dir``."""
    if isinstance(data, dict):
        data = _resolve_paths(data, base_dir)
    return validate(RunConfig, data, source=source, what="run config", error=ConfigError)


def load_config(path: str | Path) -> RunConfig:
    """Load a run config from YAML; relative paths are relative to the YAML file's folder."""
    path = Path(path)
    data = load_yaml_mapping(path, what="run config", error=ConfigError)
    return parse_config(data, path.resolve().parent, str(path))


def dump_config(config: RunConfig) -> str:
    """The config as YAML with absolute paths, so a run folder is self-describing."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
