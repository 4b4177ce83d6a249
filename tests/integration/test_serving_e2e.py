"""End to end: real models → real tritonserver → real gateway process → typed client over gRPC.

The references are computed in-process with PyTorch from the same checkpoints the repository
was built from. The last test stops Triton, so this module keeps its own server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from lmforge_client.client import LmforgeClient, LmforgeError

from gateway.processes import GatewayProcess, gateway_config, start_gateway
from trainer.datasets import dataset_file, read_column

pytestmark = pytest.mark.integration

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "The new movie is awesome and the actors are brilliant.",
    "Stock markets fell sharply after the announcement.",
    "How do I reset my password?",
    "tiny",
    "Quantum entanglement links the states of two particles no matter how far apart they are, "
    "which Einstein famously called spooky action at a distance.",
]
MODELS = [
    {"name": "minilm", "task": "embed", "triton_model": "minilm"},
    {"name": "sentiment", "task": "classify", "triton_model": "sentiment"},
    # the same models through the ensemble (tokenized inside Triton): the "ensemble" endpoint
    # is the same server, without the repository path that lets the gateway tokenize
    {
        "name": "minilm-ensemble",
        "task": "embed",
        "deployments": [{"name": "e", "triton_model": "minilm", "endpoint": "ensemble"}],
    },
    {
        "name": "sentiment-ensemble",
        "task": "classify",
        "deployments": [{"name": "e", "triton_model": "sentiment", "endpoint": "ensemble"}],
    },
]
MAX_INPUTS = 16
MAX_CHARS = 2000


def _sst2_dev(limit: int) -> list[str]:
    return read_column(dataset_file("sst2", "dev"), "sentence", limit)


@pytest.fixture(scope="module")
def triton(demo_repository: Path) -> Iterator[object]:
    from triton_host.launcher import TritonServer

    with TritonServer(demo_repository) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(triton: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("gateway")
    url = triton.grpc_url  # type: ignore[attr-defined]
    config = gateway_config(
        url, MODELS, max_inputs_per_request=MAX_INPUTS, max_chars_per_input=MAX_CHARS
    )
    config["triton"]["repository"] = str(triton.repository)  # type: ignore[attr-defined]
    config["endpoints"] = {"ensemble": {"url": url}}
    process = start_gateway(workdir, config)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[LmforgeClient]:
    with LmforgeClient(gateway.target, timeout=60) as c:
        c.wait_for_health("SERVING", 60)
        yield c


def _torch_embeddings(texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from trainer.repository.demo import minilm_checkpoint

    folder = minilm_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def _torch_probabilities(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainer.repository.demo import sentiment_checkpoint

    folder = sentiment_checkpoint(0.0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, dim=-1).numpy()
    labels = [model.config.id2label[i] for i in range(probs.shape[1])]
    return probs, labels


def test_embed_matches_pytorch_minilm_mean_pooling(client: LmforgeClient) -> None:
    reply = client.embed("minilm", SENTENCES)
    served = np.asarray(reply.embeddings, dtype=np.float32)
    reference = _torch_embeddings(SENTENCES)
    assert served.shape == reference.shape == (len(SENTENCES), 384)
    cosines = (served * reference).sum(1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosines.min() >= 0.999, cosines
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-4)
    assert reply.served_by.model == "minilm"
    assert reply.served_by.triton_model == "minilm"
    assert reply.served_by.triton_model_version == "1"
    assert all(n > 0 for n in reply.input_tokens)
    assert reply.usage.input_tokens == sum(reply.input_tokens)
    assert reply.timing.total >= reply.timing.inference > 0


def test_embed_dimensions_truncates_and_renormalizes(client: LmforgeClient) -> None:
    full = np.asarray(client.embed("minilm", SENTENCES[:2]).embeddings)
    short = np.asarray(client.embed("minilm", SENTENCES[:2], dimensions=64).embeddings)
    assert short.shape == (2, 64)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    assert np.allclose(short, expected, atol=1e-5)


def test_classify_argmax_matches_pytorch_on_sst2_dev(client: LmforgeClient) -> None:
    texts = _sst2_dev(64)
    probs, labels = _torch_probabilities(texts)
    served: list[dict[str, float]] = []
    for start in range(0, len(texts), MAX_INPUTS):
        reply = client.classify("sentiment", texts[start : start + MAX_INPUTS])
        assert reply.served_by.triton_model == "sentiment"
        served.extend({s.label: s.score for s in r.labels} for r in reply.results)
    assert len(served) == len(texts)
    for row, scores in enumerate(served):
        assert set(scores) == set(labels)
        assert max(scores, key=scores.__getitem__) == labels[int(probs[row].argmax())]
        assert np.allclose([scores[label] for label in labels], probs[row], atol=1e-3)


def test_classify_top_k_returns_best_label_first(client: LmforgeClient) -> None:
    reply = client.classify("sentiment", ["an utterly delightful film", "boring"], top_k=1)
    assert [len(r.labels) for r in reply.results] == [1, 1]
    assert [r.top.label for r in reply.results] == ["positive", "negative"]


def test_list_models_reports_labels_and_dimension(client: LmforgeClient) -> None:
    client.embed("minilm", ["warm up"])  # deployments describe their tokenizer once used
    client.embed("minilm-ensemble", ["warm up"])
    models = {m.name: m for m in client.list_models()}
    assert models["minilm"].task == "embed" and models["minilm"].dimension == 384
    assert models["sentiment"].task == "classify"
    assert sorted(models["sentiment"].labels) == ["negative", "positive"]
    assert all(m.ready for m in models.values())
    assert all(m.triton_model_version == "1" for m in models.values())
    assert models["minilm"].deployments[0].gateway_tokenizes
    assert not models["minilm-ensemble"].deployments[0].gateway_tokenizes


def test_gateway_tokenization_gives_what_the_ensemble_gives(client: LmforgeClient) -> None:
    """One tokenizer definition, two paths: the gateway tokenizing and calling the encoder
    must equal Triton's own tokenize → encoder ensemble, token for token."""
    texts = SENTENCES + _sst2_dev(24) + [" ".join(["word"] * 300)]
    for start in range(0, len(texts), MAX_INPUTS):
        chunk = texts[start : start + MAX_INPUTS]
        direct = client.embed("minilm", chunk)
        ensemble = client.embed("minilm-ensemble", chunk)
        assert direct.input_tokens == ensemble.input_tokens
        diff = np.abs(np.asarray(direct.embeddings) - np.asarray(ensemble.embeddings)).max()
        assert diff < 1e-5, diff
        scores = client.classify("sentiment", chunk)
        scores_ensemble = client.classify("sentiment-ensemble", chunk)
        assert [r.input_tokens for r in scores.results] == [
            r.input_tokens for r in scores_ensemble.results
        ]
        for a, b in zip(scores.results, scores_ensemble.results, strict=True):
            assert a.top.label == b.top.label and abs(a.top.score - b.top.score) < 1e-5


def test_unknown_model_is_not_found(client: LmforgeClient) -> None:
    with pytest.raises(LmforgeError) as info:
        client.embed("no-such-model", ["hello"])
    assert info.value.code is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("inputs", "truncation", "field"),
    [
        ([], "end", "inputs"),
        (["fine", ""], "end", "inputs[1]"),
        (["x"] * (MAX_INPUTS + 1), "end", "inputs"),
        (["fine", "y" * (MAX_CHARS + 1)], "end", "inputs[1]"),
        (["fine"], 99, "truncation"),
    ],
    ids=["empty-list", "empty-string", "too-many", "too-long-chars", "unknown-truncation"],
)
def test_bad_input_is_invalid_argument_with_field_violation(
    client: LmforgeClient, inputs: list[str], truncation: str | int, field: str
) -> None:
    for call in (
        lambda: client.embed("minilm", inputs, truncation=truncation),
        lambda: client.classify("sentiment", inputs, truncation=truncation),
    ):
        with pytest.raises(LmforgeError) as info:
            call()
        assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert field in [v.field for v in info.value.violations], info.value


@pytest.mark.parametrize("model", ["minilm", "minilm-ensemble"])
def test_too_many_tokens_without_truncation_is_invalid_argument(
    client: LmforgeClient, model: str
) -> None:
    long_text = " ".join(["word"] * 300)  # under the char limit, over 256 tokens
    assert len(long_text) < MAX_CHARS
    with pytest.raises(LmforgeError) as info:
        client.embed(model, ["short", long_text], truncation="none")
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[1]" in [v.field for v in info.value.violations], info.value
    # the same text is accepted, cut to the model's length, when truncation is on
    reply = client.embed(model, ["short", long_text], truncation="end")
    assert reply.input_tokens[1] == 256


def test_gateway_exports_prometheus_metrics(client: LmforgeClient, gateway: GatewayProcess) -> None:
    import urllib.request

    client.embed("minilm", ["count me"])
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics_port}/metrics") as page:
        text = page.read().decode()
    assert "lmforge_" in text and 'model="minilm"' in text


def test_stopping_triton_fails_fast_with_unavailable_and_not_serving(
    client: LmforgeClient, triton: object
) -> None:
    triton.stop()  # type: ignore[attr-defined]
    started = time.monotonic()
    with pytest.raises(LmforgeError) as info:
        client.embed("minilm", ["is anybody there?"], timeout=30)
    elapsed = time.monotonic() - started
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert elapsed < 2.0, elapsed
    client.wait_for_health("NOT_SERVING", timeout=5)
