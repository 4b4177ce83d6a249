"""The demo repository served by the bundled tritonserver, checked against in-process PyTorch.

One repository build and one server per module. The first run trains the ``sentiment`` demo
model with the DeepSpeed trainer (a few minutes, cached under ``$LMFORGE_CACHE``); later runs
reuse it.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from trainer.datasets import dataset_file, read_records
from trainer.repository.demo import DemoBuild, minilm_checkpoint
from triton_host.launcher import TritonServer, TritonStartError
from triton_models.runtime import contract

pytestmark = pytest.mark.integration

SENTENCES = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage while the crowd sings along.",
    "Triton batches requests of similar length together.",
    "ok",
]


def _infer(
    client: Any, model: str, texts: list[str], truncate: bool = True, output: str = ""
) -> dict[str, np.ndarray]:
    text = grpcclient.InferInput(contract.INPUT_TEXT, [len(texts), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    flag = grpcclient.InferInput(contract.INPUT_TRUNCATE, [len(texts), 1], "BOOL")
    flag.set_data_from_numpy(np.full((len(texts), 1), truncate))
    result = client.infer(model, [text, flag])
    names = [output, contract.OUTPUT_NUM_TOKENS] if output else [contract.OUTPUT_NUM_TOKENS]
    return {name: result.as_numpy(name) for name in names}


def _sst2_dev(limit: int) -> list[tuple[str, int]]:
    records = read_records(dataset_file("sst2", "dev"))
    rows = [(str(r["sentence"]), int(r["label"])) for _, r in records if isinstance(r, dict)]
    return rows[:limit]


@pytest.fixture(scope="module")
def demo(demo_build: DemoBuild) -> DemoBuild:
    return demo_build  # built once per session in conftest.py


@pytest.fixture(scope="module")
def server(demo: DemoBuild) -> Iterator[TritonServer]:
    with TritonServer(demo.path) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: TritonServer) -> Any:
    return grpcclient.InferenceServerClient(server.grpc_url)


# -- the launcher on its own --------------------------------------------------------------------
_ECHO_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * 2)]))
        return responses
"""


def _echo_repository(root: Path, data_type: str = "TYPE_FP32") -> Path:
    model = root / "double"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(_ECHO_MODEL)
    (model / "config.pbtxt").write_text(
        textwrap.dedent(
            f"""
            name: "double"
            backend: "python"
            max_batch_size: 4
            input [{{ name: "X" data_type: {data_type} dims: [2] }}]
            output [{{ name: "Y" data_type: TYPE_FP32 dims: [2] }}]
            """
        )
    )
    return root


def test_launcher_serves_a_python_model_and_stops_cleanly(tmp_path: Path) -> None:
    repo = _echo_repository(tmp_path / "repo")
    with TritonServer(repo) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        x = grpcclient.InferInput("X", [1, 2], "FP32")
        x.set_data_from_numpy(np.array([[1.5, -2.0]], dtype=np.float32))
        assert client.infer("double", [x]).as_numpy("Y").tolist() == [[3.0, -4.0]]
        assert server.pid is not None and server.returncode is None
    assert server.returncode is not None
    assert not server.is_running()


def test_launcher_raises_typed_error_with_log_tail_when_a_model_fails_to_load(
    tmp_path: Path,
) -> None:
    repo = _echo_repository(tmp_path / "repo", data_type="TYPE_NOPE")
    server = TritonServer(repo)
    with pytest.raises(TritonStartError) as info, server:
        pass
    assert "double" in info.value.log_tail
    assert not server.is_running()


# -- the demo repository ------------------------------------------------------------------------
def test_demo_build_passed_parity_for_every_model(demo: DemoBuild) -> None:
    assert demo.sentiment_accuracy >= 0.85
    by_name = {m.name: m for m in demo.report.models}
    assert set(by_name) == {"minilm", "sentiment", "smollm2"}
    assert by_name["minilm"].parity.min_cosine >= 0.9999
    assert by_name["sentiment"].parity.argmax_agreement == 1.0
    # the generator: served in-flight decoding = transformers' greedy generate, token for token
    assert by_name["smollm2"].task == contract.TASK_GENERATE
    assert by_name["smollm2"].parity.argmax_agreement == 1.0


def test_minilm_embeddings_match_in_process_pytorch(client: Any) -> None:
    out = _infer(client, "minilm", SENTENCES, output=contract.OUTPUT_EMBEDDING)
    served = out[contract.OUTPUT_EMBEDDING]
    folder = minilm_checkpoint()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    cosines = (served * reference).sum(axis=1) / np.linalg.norm(served, axis=1)
    assert served.shape == (len(SENTENCES), 384)
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-4)
    assert cosines.min() >= 0.999, cosines
    assert (
        out[contract.OUTPUT_NUM_TOKENS].ravel().tolist() == batch["attention_mask"].sum(1).tolist()
    )


def test_sentiment_probs_argmax_matches_in_process_pytorch_on_sst2_dev(
    client: Any, demo: DemoBuild
) -> None:
    rows = _sst2_dev(64)
    texts = [t for t, _ in rows]
    probs = np.concatenate(
        [
            _infer(client, "sentiment", texts[i : i + 16], output=contract.OUTPUT_PROBS)[
                contract.OUTPUT_PROBS
            ]
            for i in range(0, len(texts), 16)
        ]
    )
    checkpoint = demo.sentiment_checkpoint
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        reference = torch.softmax(model(**batch).logits, dim=-1).numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=1) == reference.argmax(axis=1)).all()
    assert np.abs(probs - reference).max() < 1e-3
    accuracy = float(np.mean(probs.argmax(axis=1) == np.array([label for _, label in rows])))
    assert accuracy >= 0.8


def test_sentiment_ensemble_describes_its_labels(client: Any, demo: DemoBuild) -> None:
    config = client.get_model_config("sentiment").config
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params[contract.PARAM_TASK] == contract.TASK_CLASSIFY
    assert params[contract.PARAM_LABELS] == '["negative", "positive"]'
    assert (demo.path / "sentiment" / contract.LABELS_FILE).read_text() == "negative\npositive\n"


def test_too_long_text_without_truncation_fails_with_input_too_long(client: Any) -> None:
    with pytest.raises(InferenceServerException) as info:
        _infer(client, "minilm", ["fine", "word " * 400], truncate=False)
    assert contract.INPUT_TOO_LONG in info.value.message()
    assert "row 1" in info.value.message()
    out = _infer(client, "minilm", ["word " * 400], truncate=True)
    assert out[contract.OUTPUT_NUM_TOKENS].ravel().tolist() == [256]


def test_concurrent_requests_of_different_lengths_get_their_own_results(client: Any) -> None:
    texts = [("short " * n).strip() for n in (1, 5, 20, 60, 3, 90, 12, 40)]
    alone = [
        _infer(client, "minilm", [t], output=contract.OUTPUT_EMBEDDING)[contract.OUTPUT_EMBEDDING][
            0
        ]
        for t in texts
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(
            pool.map(
                lambda t: _infer(client, "minilm", [t], output=contract.OUTPUT_EMBEDDING)[
                    contract.OUTPUT_EMBEDDING
                ][0],
                texts,
            )
        )
    for a, b in zip(alone, together, strict=True):
        assert float(np.dot(a, b)) > 0.9999
