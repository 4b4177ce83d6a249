"""PyTorch vs ONNX Runtime on real sentences, gated by the spec's thresholds.

Sentences are tokenized with the same :class:`~triton_models.runtime.text.TextEncoder` the
served ``_tokenize`` model uses (same truncation and bucket padding), so the check covers
what Triton will actually feed the graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trainer.datasets import read_column
from trainer.errors import ExportParityError, SpecError
from trainer.repository.spec import DEFAULT_PARITY_SENTENCES, ModelSpec, ParitySpec
from triton_models.runtime import contract
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
    min_cosine: float | None  # None for one-column outputs (regression), where it means nothing
    mean_cosine: float | None
    argmax_agreement: float | None = None  # classifiers only

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Texts = tuple[list[str], list[str] | None]  # (texts, second texts of pair models)


def parity_texts(spec: ParitySpec, text_pairs: bool = False) -> Texts:
    """The sentences (and, for pair models, their second texts) a parity check runs on."""
    texts = list(spec.sentences)
    pairs: list[str] | None = [] if text_pairs else None
    dataset = spec.dataset
    if dataset is not None:
        column = read_column(dataset.path, dataset.column, dataset.limit)
        texts += column
        if pairs is not None:
            if dataset.pair_column is None:
                raise SpecError(
                    f"parity dataset {dataset.path}: a pair model needs pair_column "
                    "(the second text of each row)"
                )
            pairs += read_column(dataset.path, dataset.pair_column, dataset.limit)
    if not texts:
        texts = list(DEFAULT_PARITY_SENTENCES)
    if pairs is not None and len(pairs) < len(texts):  # pair the rest with other sentences
        pairs += texts[::-1][len(pairs) :]
    return texts, pairs


def feed_batches(
    encoder: TextEncoder,
    texts: Sequence[str],
    input_names: Sequence[str],
    pairs: Sequence[str] | None = None,
) -> Iterator[Feeds]:
    """Chunks of rows as the served tokenizer pads them (truncation on)."""
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start : start + _CHUNK]
        pair_chunk = None if pairs is None else pairs[start : start + _CHUNK]
        batch = encoder(chunk, [True] * len(chunk), pair_chunk)
        tensors = {
            contract.INPUT_IDS: batch.input_ids,
            contract.ATTENTION_MASK: batch.attention_mask,
            contract.TOKEN_TYPE_IDS: batch.token_type_ids,
        }
        yield {name: tensors[name] for name in input_names}


def parity_feeds(
    spec: ModelSpec, tokenizer_file: Path, input_names: Sequence[str], text_pairs: bool = False
) -> list[Feeds]:
    """The spec's parity rows, tokenized exactly as the served ``_tokenize`` model does."""
    encoder = TextEncoder.from_file(tokenizer_file, spec.max_length, spec.all_buckets)
    texts, pairs = parity_texts(spec.parity, text_pairs)
    return list(feed_batches(encoder, texts, input_names, pairs))


def torch_runner(module: Any, input_names: Sequence[str]) -> Runner:
    import torch

    def run(feeds: Feeds) -> FloatArray:
        with torch.no_grad():
            out = module(*(torch.from_numpy(feeds[name]) for name in input_names))
        return np.asarray(out.numpy(), dtype=np.float32)

    return run


def row_wise(run: Runner) -> Runner:
    """``run`` on every row alone at its own length, as a row-wise served encoder runs it."""
    from triton_models.runtime.ragged import own_length_rows

    def each(feeds: Feeds) -> FloatArray:
        rows = own_length_rows(feeds, contract.ATTENTION_MASK)
        return np.concatenate([run(row) for row in rows])

    return each


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
    if refs.ndim == 1:
        refs, cands = refs[:, None], cands[:, None]
    cosines = row_cosines(refs, cands) if refs.shape[1] > 1 else None
    agreement = None
    if task == contract.TASK_CLASSIFY and refs.shape[1] > 1:
        agreement = float((refs.argmax(axis=1) == cands.argmax(axis=1)).mean())
    return ParityReport(
        rows=int(refs.shape[0]),
        max_abs_diff=float(np.abs(refs - cands).max()),
        min_cosine=None if cosines is None else float(cosines.min()),
        mean_cosine=None if cosines is None else float(cosines.mean()),
        argmax_agreement=agreement,
    )


def enforce(report: ParityReport, atol: float, min_cosine: float, what: str) -> None:
    """Raise :class:`ExportParityError` when ``report`` misses either tolerance."""
    cosine_bad = report.min_cosine is not None and report.min_cosine < min_cosine
    if report.max_abs_diff > atol or cosine_bad:
        raise ExportParityError(
            report.max_abs_diff,
            atol,
            min_cosine=report.min_cosine,
            cosine_threshold=min_cosine if report.min_cosine is not None else None,
            what=what,
        )


def check_export_parity(
    spec: ModelSpec,
    module: Any,
    input_names: Sequence[str],
    tokenizer_file: Path,
    onnx_path: Path,
    text_pairs: bool = False,
) -> ParityReport:
    """Compare the PyTorch module with the ONNX graph; raise :class:`ExportParityError`."""
    batches = parity_feeds(spec, tokenizer_file, input_names, text_pairs)
    report = compare(
        torch_runner(module, input_names),
        ort_runner(onnx_path, spec.cpu_threads),
        batches,
        spec.task,
    )
    logger.info(
        "parity %s: %d rows, max |diff| %.2e (atol %.1e), min cosine %s (threshold %.6f)",
        spec.name,
        report.rows,
        report.max_abs_diff,
        spec.parity.atol,
        report.min_cosine,
        spec.parity.min_cosine,
    )
    enforce(
        report, spec.parity.atol, spec.parity.min_cosine, f"model {spec.name!r} (ONNX vs PyTorch)"
    )
    return report
