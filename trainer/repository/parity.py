"""PyTorch vs ONNX Runtime on real sentences, gated by the spec's thresholds.

Sentences are tokenized with the same :class:`~triton_models.runtime.text.TextEncoder` the
served ``_tokenize`` model uses (same truncation and bucket padding), so the check covers
what Triton will actually feed the graph.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trainer.repository.errors import ExportParityError, SpecError
from trainer.repository.spec import DEFAULT_PARITY_SENTENCES, ModelSpec, ParitySpec
from triton_models import contract
from triton_models.runtime.text import TextEncoder

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
Feeds = dict[str, npt.NDArray[np.int64]]
Runner = Callable[[Feeds], FloatArray]

_CHUNK = 16


@dataclass(frozen=True)
class ParityReport:
    rows: int
    max_abs_diff: float
    min_cosine: float
    mean_cosine: float
    argmax_agreement: float | None = None  # classify only

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_tsv_column(path: Path, column: int | str, limit: int) -> list[str]:
    """Up to ``limit`` non-empty values of one column of a TSV file with a header line."""
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise SpecError(f"cannot read parity dataset {path}: {exc}") from exc
    with handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise SpecError(f"parity dataset {path} is empty")
        if isinstance(column, str):
            if column not in header:
                raise SpecError(f"parity dataset {path} has no column {column!r} (has {header})")
            index = header.index(column)
        else:
            index = column
            if not 0 <= index < len(header):
                raise SpecError(f"parity dataset {path} has {len(header)} columns, not {index + 1}")
        values = []
        for row in reader:
            if len(row) > index and row[index].strip():
                values.append(row[index])
                if len(values) >= limit:
                    break
    return values


def parity_sentences(spec: ParitySpec) -> list[str]:
    sentences = list(spec.sentences)
    if spec.dataset is not None:
        sentences += read_tsv_column(spec.dataset.path, spec.dataset.column, spec.dataset.limit)
    return sentences or list(DEFAULT_PARITY_SENTENCES)


def feed_batches(
    encoder: TextEncoder, sentences: Sequence[str], input_names: Sequence[str]
) -> Iterator[Feeds]:
    """Chunks of sentences as the served tokenizer pads them (truncation on)."""
    for start in range(0, len(sentences), _CHUNK):
        chunk = sentences[start : start + _CHUNK]
        batch = encoder(chunk, [True] * len(chunk))
        tensors = {
            contract.INPUT_IDS: batch.input_ids,
            contract.ATTENTION_MASK: batch.attention_mask,
            contract.TOKEN_TYPE_IDS: batch.token_type_ids,
        }
        yield {name: tensors[name] for name in input_names}


def torch_runner(module: Any, input_names: Sequence[str]) -> Runner:
    import torch

    def run(feeds: Feeds) -> FloatArray:
        with torch.no_grad():
            out = module(*(torch.from_numpy(feeds[name]) for name in input_names))
        return np.asarray(out.numpy(), dtype=np.float32)

    return run


def ort_runner(onnx_path: Path, threads: int = 0) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    output = session.get_outputs()[0].name

    def run(feeds: Feeds) -> FloatArray:
        return np.asarray(session.run([output], feeds)[0], dtype=np.float32)

    return run


def row_cosines(a: FloatArray, b: FloatArray) -> FloatArray:
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(num / np.maximum(den, 1e-12), dtype=np.float32)


def compare(
    reference: Runner, candidate: Runner, batches: Sequence[Feeds], task: str
) -> ParityReport:
    refs = np.concatenate([reference(f) for f in batches])
    cands = np.concatenate([candidate(f) for f in batches])
    cos = row_cosines(refs, cands)
    agreement = None
    if task == contract.TASK_CLASSIFY:
        agreement = float((refs.argmax(axis=1) == cands.argmax(axis=1)).mean())
    return ParityReport(
        rows=int(refs.shape[0]),
        max_abs_diff=float(np.abs(refs - cands).max()),
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        argmax_agreement=agreement,
    )


def check_export_parity(
    spec: ModelSpec, module: Any, input_names: Sequence[str], tokenizer_file: Path, onnx_path: Path
) -> ParityReport:
    """Compare the PyTorch module with the ONNX graph; raise :class:`ExportParityError`."""
    encoder = TextEncoder.from_file(tokenizer_file, spec.max_length, spec.all_buckets)
    batches = list(feed_batches(encoder, parity_sentences(spec.parity), input_names))
    report = compare(
        torch_runner(module, input_names),
        ort_runner(onnx_path, spec.cpu_threads),
        batches,
        spec.task,
    )
    logger.info(
        "parity %s: %d rows, max |diff| %.2e (atol %.1e), min cosine %.6f (threshold %.6f)",
        spec.name,
        report.rows,
        report.max_abs_diff,
        spec.parity.atol,
        report.min_cosine,
        spec.parity.min_cosine,
    )
    if report.max_abs_diff > spec.parity.atol or report.min_cosine < spec.parity.min_cosine:
        raise ExportParityError(
            report.max_abs_diff,
            spec.parity.atol,
            report.min_cosine,
            spec.parity.min_cosine,
            model=spec.name,
        )
    return report
