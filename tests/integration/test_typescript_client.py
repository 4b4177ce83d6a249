"""A TypeScript client (clients/typescript: Connect's gRPC transport over HTTP/2, stubs from
protoc-gen-es) against a real tritonserver + gateway; its answers equal the Python client's.

The stubs are generated here, with the TypeScript plugin of ``buf.gen.yaml`` only (its Go and
Java plugins are remote ones on buf.build, which needs network this test does not assume), and
compiled with ``tsc``; neither is committed. ``npm ci`` installs the committed lock file, through
npm's cache when it has the packages (``--prefer-offline``). Without Node.js the test fails with
the reason: ``make test`` needs it for buf anyway, and ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from lmforge_client.client import LmforgeClient

from gateway.processes import gateway_config, start_gateway
from tests.buf import buf_command, require_node

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "typescript"
TEXT = "The new movie is awesome and the actors are brilliant."
PROMPT = "The capital of France is"
MAX_NEW_TOKENS = 6
MODELS = [
    {"name": "minilm", "task": "embed", "triton_model": "minilm"},
    {"name": "sentiment", "task": "classify", "triton_model": "sentiment"},
    {"name": "smollm2", "task": "generate", "triton_model": "smollm2"},
]


def _run(command: list[str], cwd: Path, timeout: float) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _typescript_template() -> str:
    """buf.gen.yaml (managed mode included) with its local plugins only: protoc-gen-es."""
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text(encoding="utf-8"))
    local = [p for p in template["plugins"] if "local" in p]
    assert [Path(p["local"]).name for p in local] == ["protoc-gen-es"], local
    assert all(p["out"].startswith("clients/typescript/") for p in local), local
    return json.dumps({**template, "plugins": local})


@pytest.fixture(scope="module")
def smoke_script() -> Path:
    """``npm ci``, ``buf generate`` (TypeScript only) and ``tsc``: the compiled smoke client."""
    require_node("node", "npm")
    _run(["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"], CLIENT, 600)
    _run([*buf_command(), "generate", "--template", _typescript_template()], ROOT, 240)
    assert (CLIENT / "src/gen/lmforge/v1/inference_service_pb.ts").is_file()
    _run(["npm", "run", "--silent", "build"], CLIENT, 240)
    return CLIENT / "dist" / "smoke.js"


@pytest.fixture(scope="module")
def gateway(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from triton_host.launcher import TritonServer

    with TritonServer(demo_repository) as triton:
        config = gateway_config(triton.grpc_url, MODELS)
        config["triton"]["repository"] = str(triton.repository)
        with start_gateway(tmp_path_factory.mktemp("gateway"), config) as process:
            with LmforgeClient(process.target, timeout=60) as client:
                client.wait_for_health("SERVING", 120)
            yield process.target


def test_typescript_client_matches_the_python_client(smoke_script: Path, gateway: str) -> None:
    command = ["node", str(smoke_script), gateway, "--text", TEXT, "--prompt", PROMPT]
    command += ["--embed", "minilm", "--classify", "sentiment", "--generate", "smollm2"]
    command += ["--max-new-tokens", str(MAX_NEW_TOKENS)]
    answer: dict[str, Any] = json.loads(_run(command, CLIENT, 180))
    with LmforgeClient(gateway, timeout=60) as client:
        embedding = client.embed("minilm", [TEXT])
        classification = client.classify("sentiment", [TEXT])
        completion = client.generate("smollm2", PROMPT, max_new_tokens=MAX_NEW_TOKENS)

    assert {m["name"] for m in answer["listModels"]["models"]} == {m["name"] for m in MODELS}

    embed = answer["embed"]
    assert embed["dimensions"] == 384
    assert embed["servedBy"]["model"] == "minilm"
    values = np.asarray(embed["embeddings"][0]["values"], dtype=np.float64)
    expected = np.asarray(embedding.embeddings[0], dtype=np.float64)
    assert values.shape == expected.shape == (384,)
    assert np.abs(values - expected).max() <= 1e-5

    result = answer["classify"]["results"][0]
    top = classification.results[0].top
    assert result["labels"][0]["label"] == top.label
    assert result["labels"][0]["score"] == pytest.approx(top.score, abs=1e-5)
    assert answer["classify"]["servedBy"]["model"] == "sentiment"

    # greedy decoding: the same text from both clients, unary and streamed
    generated = answer["generate"]
    finish_reason = f"FINISH_REASON_{completion.finish_reason.upper()}"
    assert completion.text.strip(), completion
    assert generated["text"] == completion.text
    assert generated["finishReason"] == finish_reason
    assert generated["usage"]["outputTokens"] == completion.usage.output_tokens
    chunks = answer["generateStream"]
    assert len(chunks) > 1
    assert "".join(chunk.get("text", "") for chunk in chunks) == completion.text
    assert chunks[-1]["finishReason"] == finish_reason
