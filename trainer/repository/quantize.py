"""Graph fusion and INT8 quantization of an exported graph, each gated against its FP32 source.

* :func:`optimize_graph`: ONNX Runtime's transformer optimizer fuses attention, layer norm and
  GELU into single ops (the graph must come from an ``eager``-attention export, opset 17).
* :func:`quantize_int8_dynamic`: INT8 weights (per channel: per-tensor INT8 costs sentence
  encoders a lot of accuracy), activations quantized on the fly.
* :func:`quantize_int8_static`: QDQ format with activation ranges calibrated on real inputs
  (min-max, entropy or percentile).

Every quantized graph passes two gates or is deleted with a :class:`GateError`: its outputs
against FP32 (min cosine, or max abs diff for one-column outputs) and, when the spec names a
labelled slice, the task metric (accuracy / Spearman) may drop at most ``max_drop``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.datasets import read_column
from trainer.errors import ExportError, GateError
from trainer.repository.parity import (
    Feeds,
    ParityReport,
    Runner,
    compare,
    feed_batches,
    ort_runner,
    parity_feeds,
    row_wise,
)
from trainer.repository.spec import MetricGate, ModelSpec
from trainer.training.metrics import spearman
from triton_models.runtime import contract
from triton_models.runtime.text import TextEncoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricReport:
    metric: str
    fp32: float
    int8: float
    max_drop: float
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QuantizationReport:
    method: str
    outputs: ParityReport  # INT8 vs FP32 outputs on the parity rows
    metric: MetricReport | None  # the task metric on the gate's labelled slice


def optimize_graph(source: Path, dest: Path, num_heads: int, hidden_size: int) -> Path:
    """Fuse the transformer's ops with ONNX Runtime's optimizer (BERT-style encoders)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size
    )
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(dest))
    logger.info("fused %s: %s", source.name, fused)
    return dest


def fuse_or_keep(source: Path, dest: Path, config: Any) -> Path:
    """The fused graph when the optimizer knows the architecture, else ``source`` as it is."""
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    if getattr(config, "model_type", "") not in ("bert", "roberta", "distilbert", "xlm-roberta"):
        logger.info("no graph fusion for model type %r", getattr(config, "model_type", None))
        return source
    try:
        return optimize_graph(source, dest, heads, hidden)
    except Exception as exc:  # the optimizer raises whatever it meets; fusion is optional
        logger.warning("graph fusion failed (%s); serving the unfused graph", exc)
        return source


def quantize_int8_dynamic(source: Path, dest: Path, per_channel: bool = True) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model_input=str(source),
        model_output=str(dest),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return dest


class _Calibration:
    """The calibration reader ONNX Runtime asks for: one feed dict at a time."""

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self._feeds: Iterator[Feeds] = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # ONNX Runtime calls it between passes on some versions
        pass


def quantize_int8_static(source: Path, dest: Path, spec: ModelSpec, feeds: Sequence[Feeds]) -> Path:
    """QDQ INT8 with activation ranges from ``feeds`` (one sentence per feed)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    calibration = spec.quantize.calibration
    # Biases stay FP32: an int32 bias needs its input's scale, and a classifier's pooler reads
    # the first token through a Gather that QDQ leaves unquantized (no scale: ORT refuses).
    extra: dict[str, Any] = {"DefaultTensorType": onnx.TensorProto.FLOAT, "QuantizeBias": False}
    if calibration.method == "percentile":
        extra["CalibPercentile"] = calibration.percentile
    quantize_static(
        model_input=str(source),
        model_output=str(dest),
        calibration_data_reader=_Calibration(feeds),
        quant_format=QuantFormat.QDQ,
        per_channel=spec.quantize.per_channel,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[calibration.method],
        extra_options=extra,
    )
    return dest


def _labelled(
    gate: MetricGate, labels: Sequence[str]
) -> tuple[list[str], list[str] | None, list[float]]:
    texts = read_column(gate.path, gate.text_column, gate.limit)
    pairs = read_column(gate.path, gate.pair_column, gate.limit) if gate.pair_column else None
    raw = read_column(gate.path, gate.label_column, gate.limit)
    values = []
    for value in raw:  # class names or indices (classifiers), or scores
        values.append(float(labels.index(value)) if value in labels else float(value))
    return texts, pairs, values


def _outputs(
    run: Runner,
    encoder: TextEncoder,
    names: Sequence[str],
    texts: list[str],
    pairs: list[str] | None,
) -> np.ndarray:
    return np.concatenate([run(f) for f in feed_batches(encoder, texts, names, pairs)])


@dataclass(frozen=True)
class Scored:
    """A graph's answers on a labelled slice, row by row: the predicted class (accuracy) or
    score (Spearman) of each row next to its gold label, so a report can resample rows."""

    metric: str
    predictions: np.ndarray
    gold: np.ndarray

    @property
    def value(self) -> float:
        return metric_value(self.metric, self.predictions, self.gold)


def metric_value(metric: str, predictions: np.ndarray, gold: np.ndarray) -> float:
    if metric == "accuracy":
        return float((predictions == gold).mean())
    return spearman(predictions, gold)


def task_scores(
    run: Runner,
    task: str,
    gate: MetricGate,
    encoder: TextEncoder,
    names: Sequence[str],
    labels: Sequence[str],
    text_pairs: bool,
) -> Scored:
    """A graph on a labelled slice: accuracy for a classifier, Spearman for a regression head
    or (on scored pairs, by cosine) for an embedder."""
    texts, pairs, gold = _labelled(gate, labels)
    if task == contract.TASK_EMBED:
        if pairs is None:
            raise ExportError(f"{gate.path}: an embedder is scored on pairs: set pair_column")
        a = _outputs(run, encoder, names, texts, None)
        b = _outputs(run, encoder, names, pairs, None)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return Scored("spearman", cosine, np.asarray(gold, dtype=np.float64))
    out = _outputs(run, encoder, names, texts, pairs if text_pairs else None)
    if out.shape[1] == 1:
        return Scored("spearman", out[:, 0], np.asarray(gold, dtype=np.float64))
    return Scored("accuracy", out.argmax(axis=1), np.asarray(gold, dtype=np.int64))


def quantize_with_gate(
    spec: ModelSpec,
    fp32_path: Path,
    dest: Path,
    tokenizer_file: Path,
    input_names: tuple[str, ...],
    text_pairs: bool = False,
    labels: Sequence[str] = (),
) -> QuantizationReport:
    """Quantize ``fp32_path`` into ``dest`` if both gates pass; raise :class:`GateError`."""
    method = spec.quantize.method
    parity = parity_feeds(spec, tokenizer_file, input_names, text_pairs)
    if method == "int8_static":
        encoder = TextEncoder.from_file(tokenizer_file, spec.max_length, contract.EXACT_LENGTH)
        texts = parity_feeds_texts(spec, text_pairs)
        calibration = [
            next(feed_batches(encoder, [t], input_names, None if p is None else [p]))
            for t, p in texts[: spec.quantize.calibration.samples]
        ]
        quantize_int8_static(fp32_path, dest, spec, calibration)
    else:
        quantize_int8_dynamic(fp32_path, dest, per_channel=spec.quantize.per_channel)
    fp32, int8 = ort_runner(fp32_path, spec.cpu_threads), ort_runner(dest, spec.cpu_threads)
    if spec.quantize.serves_row_wise:  # judged as it will be served
        int8 = row_wise(int8)
    outputs = compare(fp32, int8, parity, spec.task)
    what = f"{method} quantization of {spec.name!r}"
    logger.info(
        "%s: min cosine to FP32 %s (gate %.5f), max |diff| %.3g, argmax agreement %s",
        what,
        outputs.min_cosine,
        spec.quantize.min_cosine,
        outputs.max_abs_diff,
        outputs.argmax_agreement,
    )
    try:
        if outputs.min_cosine is not None and outputs.min_cosine < spec.quantize.min_cosine:
            raise GateError(
                "min cosine to FP32", outputs.min_cosine, spec.quantize.min_cosine, what
            )
        if outputs.min_cosine is None and outputs.max_abs_diff > spec.quantize.max_abs_diff:
            raise GateError(
                "max |diff| to FP32", outputs.max_abs_diff, spec.quantize.max_abs_diff, what
            )
        metric = None
        gate = spec.quantize.gate
        if gate is not None:
            encoder = TextEncoder.from_file(tokenizer_file, spec.max_length, spec.all_buckets)
            args = (spec.task, gate, encoder, input_names, labels, text_pairs)
            reference = task_scores(fp32, *args)
            name, before, rows = reference.metric, reference.value, len(reference.gold)
            after = task_scores(int8, *args).value
            metric = MetricReport(name, before, after, gate.max_drop, rows)
            logger.info("%s: %s %.4f -> %.4f on %d rows", what, name, before, after, rows)
            if before - after > gate.max_drop:
                required = before - gate.max_drop
                raise GateError(f"{name} (FP32 {before:.4f})", after, required, what)
    except GateError:
        dest.unlink(missing_ok=True)
        raise
    return QuantizationReport(method, outputs, metric)


def parity_feeds_texts(spec: ModelSpec, text_pairs: bool) -> list[tuple[str, str | None]]:
    """The parity rows as (text, pair) tuples (calibration uses the same real sentences)."""
    from trainer.repository.parity import parity_texts

    texts, pairs = parity_texts(spec.parity, text_pairs)
    return [(t, None if pairs is None else pairs[i]) for i, t in enumerate(texts)]
