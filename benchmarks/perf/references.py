"""The in-process references of ``lmforge bench perf``, measured in the same run as the
served figures so that their ratio, not an absolute number, is what gets checked.

* an encoder model (embed, classify): the repository's own ONNX graph and tokenizer in ONNX
  Runtime in this process (:func:`trainer.repository.reference.in_process_throughput`):
  batch-1 p50 of ``session.run`` and sentences/s at batch = the load's concurrency;
* a generate model: the repository's own checkpoint, loaded with the server's loader,
  greedy ``generate`` of a fixed number of new tokens: p50 seconds per request.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

GENERATE_PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def encoder_reference(
    repository: Path, model: str, max_length: int, sentences: list[str], concurrency: int
) -> dict[str, float]:
    """``p50_ms`` (batch 1) and ``throughput`` (sentences/s at batch ``concurrency``, input
    order, tokenizing included) of the repository's encoder run in this process."""
    from trainer.repository.reference import in_process_throughput

    graph = repository / f"{model}_encoder" / "1" / "model.onnx"
    tokenizer = repository / f"{model}_tokenize" / "1" / "tokenizer.json"
    sizes = sorted({1, concurrency})
    results = in_process_throughput(graph, tokenizer, max_length, sentences, batch_sizes=sizes)
    ordered = [r for r in results if not r.sorted_by_length]
    one = next(r for r in ordered if r.batch_size == 1)
    top = next(r for r in ordered if r.batch_size == concurrency)
    return {
        "p50_ms": round(one.p50_batch_ms, 3),
        "throughput": round(top.sentences_per_s, 2),
        "batch_size": concurrency,
    }


def generate_reference(
    repository: Path, model: str, new_tokens: int, requests: int
) -> dict[str, float]:
    """``p50_ms`` per request of exactly ``new_tokens`` greedy tokens and ``throughput``
    (requests/s one after the other), after one warm-up request."""
    import torch

    from triton_models.runtime import contract
    from triton_models.runtime.causal_lm import load_causal_lm

    lm = load_causal_lm(repository / model / "1" / contract.GENERATE_MODEL_DIR)
    network: Any = lm.model
    ids = lm.tokenizer(GENERATE_PROMPT, return_tensors="pt")
    times = []
    with torch.inference_mode():
        for attempt in range(requests + 1):
            started = time.perf_counter()
            network.generate(
                **ids,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=lm.pad_id,
            )
            if attempt:  # the first one warms up
                times.append(time.perf_counter() - started)
    del lm, network
    p50 = statistics.median(times)
    return {"p50_ms": round(1000 * p50, 3), "throughput": round(1 / p50, 3), "batch_size": 1}
