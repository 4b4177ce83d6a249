"""``lmforge up --spec`` end to end: a tiny spec over HF folders written by the test → the
repository built in a child process under ``$LMFORGE_CACHE/up-<hash>`` → the bundled tritonserver
and the gateway on free ports → Embed and Classify over gRPC and over HTTP → SIGINT stops it
all, nothing left running."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from lmforge_client.client import LmforgeClient

from lmforge_core.net import free_ports
from trainer.repository.demo import minilm_checkpoint
from trainer.repository.demo_serving import spec_repository_key

pytestmark = pytest.mark.integration

_TINY: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
LABELS = {0: "neg", 1: "pos"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny random BERTs saved as HF folders (the MiniLM tokenizer) and a spec naming them
    by paths relative to the spec file."""
    import torch
    import transformers

    root = tmp_path_factory.mktemp("up-spec")
    torch.manual_seed(0)
    classifier_head: dict[str, Any] = {
        "num_labels": 2,
        "id2label": LABELS,
        "label2id": {v: k for k, v in LABELS.items()},
    }
    models = {
        "embedder": transformers.BertModel(transformers.BertConfig(**_TINY)),
        "classifier": transformers.BertForSequenceClassification(
            transformers.BertConfig(**_TINY, **classifier_head)
        ),
    }
    for name, model in models.items():
        model.save_pretrained(root / "checkpoints" / name)
        shutil.copy2(
            minilm_checkpoint() / "tokenizer.json", root / "checkpoints" / name / "tokenizer.json"
        )
    path = root / "spec.yaml"
    path.write_text(
        "models:\n"
        "  - {name: tiny-embed, task: embed, checkpoint: checkpoints/embedder, max_length: 64}\n"
        "  - {name: tiny_cls, task: classify, checkpoint: checkpoints/classifier, max_length: 64}\n"
    )
    return path


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def up(spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cache = tmp_path_factory.mktemp("cache")
    port, http_port, metrics_port = free_ports(3)
    command = [
        *(sys.executable, "-m", "lmforge", "up", "--spec", str(spec)),
        *("--port", str(port), "--http-port", str(http_port)),
        *("--metrics-port", str(metrics_port)),
    ]
    env = {**os.environ, "LMFORGE_CACHE": str(cache)}
    log = cache / "up.log"
    started = time.monotonic()
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    printed: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while not printed or "Stop with Ctrl-C." not in printed[-1]:
            assert process.poll() is None, (
                f"lmforge up exited {process.returncode}: " + log.read_text()[-3000:]
            )
            try:
                printed.append(lines.get(timeout=1.0))
            except queue.Empty:
                assert time.monotonic() < deadline, (
                    "lmforge up did not come up: " + log.read_text()[-3000:]
                )
        yield {
            "process": process,
            "printed": "".join(printed),
            "target": f"127.0.0.1:{port}",
            "http": f"http://127.0.0.1:{http_port}",
            "cache": cache,
            "seconds_to_up": time.monotonic() - started,
            "log": log,
        }
    finally:
        if process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.wait()
        reader.join(timeout=10)
        stdout.close()


def test_builds_the_spec_under_the_cache_and_prints_how_to_call_each_model(
    up: dict[str, Any], spec: Path
) -> None:
    repository = up["cache"] / f"up-{spec_repository_key(spec)}" / "repository"
    assert (repository / "tiny-embed" / "config.pbtxt").is_file()
    assert (repository / "tiny_cls" / "config.pbtxt").is_file()
    printed = up["printed"]
    assert f"--target {up['target']} embed --model tiny-embed" in printed
    assert f"--target {up['target']} classify --model tiny_cls" in printed
    assert f"{up['http']}/v1/embeddings" in printed and f"{up['http']}/predict" in printed
    print(f"lmforge up --spec: serving after {up['seconds_to_up']:.1f} s")


def test_embed_and_classify_over_grpc_and_http(up: dict[str, Any]) -> None:
    texts = ["lmforge serves your own models.", "a second sentence"]
    with LmforgeClient(up["target"], timeout=60) as client:
        embedded = client.embed("tiny-embed", texts)
        classified = client.classify("tiny_cls", texts)
        names = [m.name for m in client.list_models()]
    assert [len(v) for v in embedded.embeddings] == [32, 32]
    assert embedded.served_by.triton_model.startswith("tiny-embed")
    assert [r.top.label in LABELS.values() for r in classified.results] == [True, True]
    assert sorted(names) == ["tiny-embed", "tiny_cls"]

    reply = _post(f"{up['http']}/v1/embeddings", {"model": "tiny-embed", "input": texts})
    vectors = [d["embedding"] for d in sorted(reply["data"], key=lambda d: d["index"])]
    assert len(vectors) == 2 and len(vectors[0]) == 32
    for http_vector, grpc_vector in zip(vectors, embedded.embeddings, strict=True):
        assert max(abs(a - b) for a, b in zip(http_vector, grpc_vector, strict=True)) < 1e-4
    scores = _post(f"{up['http']}/predict", {"model": "tiny_cls", "inputs": texts[0]})
    assert {s["label"] for s in scores} == set(LABELS.values())
    assert scores[0]["label"] == classified.results[0].top.label


def test_sigint_stops_triton_and_the_gateway(up: dict[str, Any]) -> None:
    process = up["process"]
    children = psutil.Process(process.pid).children(recursive=True)
    assert any("tritonserver" in " ".join(c.cmdline()) for c in children)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, up["log"].read_text()[-3000:]
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], [c.pid for c in alive]
