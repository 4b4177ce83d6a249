"""In-process reference: a built model's ONNX graph run straight in ONNX Runtime.

What a serving path is compared with: the same graph file and the same tokenizer the
repository serves, on the same sentences, with nothing between the caller and the session.
Batches are formed in input order or sorted by length (the best a batcher could do), padded
to each batch's longest row.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from triton_models.runtime import contract
from triton_models.runtime.ragged import own_length_rows
from triton_models.runtime.text import TextEncoder


@dataclass(frozen=True)
class ReferenceResult:
    batch_size: int
    sorted_by_length: bool
    spinning: bool
    sentences_per_s: float
    p50_batch_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _session(onnx_path: Path, threads: int, spinning: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    flag = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", flag)
    options.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def in_process_throughput(
    onnx_path: Path,
    tokenizer_file: Path,
    max_length: int,
    sentences: Sequence[str],
    *,
    batch_sizes: Sequence[int] = (1, 8, 16, 32),
    threads: int = 0,
    spinning: bool = False,
    rounds: int = 2,
    row_wise: bool = False,
) -> list[ReferenceResult]:
    """Sentences per second for each batch size, in input order and sorted by length; the
    best of ``rounds`` passes over all sentences (after one warm-up pass). ``row_wise``: every
    row of a batch runs alone, as a row-wise served encoder runs it."""
    session = _session(onnx_path, threads, spinning)
    names = {i.name for i in session.get_inputs()}
    encoder = TextEncoder.from_file(tokenizer_file, max_length, contract.EXACT_LENGTH)
    results = []
    for batch_size in batch_sizes:
        for by_length in (False, True):
            order = list(range(len(sentences)))
            if by_length:
                order.sort(key=lambda i: len(sentences[i]))
            batches = [
                [sentences[i] for i in order[s : s + batch_size]]
                for s in range(0, len(order), batch_size)
            ]
            best, times = 0.0, list[float]()
            for attempt in range(rounds + 1):
                times = list[float]()
                started = time.perf_counter()
                for chunk in batches:
                    parts = served_feeds(encoder, chunk, names, row_wise)
                    t = time.perf_counter()
                    for part in parts:
                        session.run(None, part)
                    times.append(time.perf_counter() - t)
                rate = len(sentences) / (time.perf_counter() - started)
                if attempt:  # the first pass warms the session up
                    best = max(best, rate)
            results.append(
                ReferenceResult(
                    batch_size, by_length, spinning, best, 1000 * statistics.median(times)
                )
            )
    return results


def served_feeds(
    encoder: TextEncoder, texts: Sequence[str], names: Collection[str], row_wise: bool
) -> list[dict[str, Any]]:
    """The encoder feeds for ``texts`` as the served tokenizer makes them (truncated, padded to
    the longest): one batch, or one feed per row at its own length for a row-wise encoder."""
    tokens = encoder(list(texts), [True] * len(texts))
    feeds = {
        contract.INPUT_IDS: tokens.input_ids,
        contract.ATTENTION_MASK: tokens.attention_mask,
        contract.TOKEN_TYPE_IDS: tokens.token_type_ids,
    }
    feeds = {k: v for k, v in feeds.items() if k in names}
    return own_length_rows(feeds, contract.ATTENTION_MASK) if row_wise else [feeds]


def repository_outputs(repository: Path, name: str, texts: Sequence[str], max_length: int) -> Any:
    """The outputs of model ``name`` of a built repository on ``texts`` (its own encoder
    graph and tokenizer, in this process): probabilities of a classifier, embeddings of an
    embedder; one row per text."""
    import numpy as np

    from trainer.repository.parity import feed_batches

    graph = repository / f"{name}_encoder" / "1" / "model.onnx"
    tokenizer = repository / f"{name}_tokenize" / "1" / "tokenizer.json"
    session = _session(graph, 0, False)
    names = [i.name for i in session.get_inputs()]
    encoder = TextEncoder.from_file(tokenizer, max_length, contract.EXACT_LENGTH)
    feeds: list[dict[str, Any]] = list(feed_batches(encoder, list(texts), names))
    if served_row_wise(repository, name):  # as the served encoder runs it
        feeds = [row for f in feeds for row in own_length_rows(f, contract.ATTENTION_MASK)]
    return np.concatenate([session.run(None, f)[0] for f in feeds]).astype(np.float32)


def served_row_wise(repository: Path, name: str) -> bool:
    """Whether the repository's ``<name>_encoder`` runs every row alone (dynamic INT8)."""
    from trainer.repository.pbtxt import read_parameters

    config = repository / f"{name}_encoder" / "config.pbtxt"
    return read_parameters(config).get(contract.ENCODER_ROW_WISE, "false") == "true"


def repository_labels(repository: Path, name: str) -> list[str]:
    """The class names a built classifier serves, in output order."""
    return (repository / name / "labels.txt").read_text(encoding="utf-8").splitlines()
