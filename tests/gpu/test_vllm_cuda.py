"""Generation on CUDA: the demo's SmolLM2 served by ``vllm`` (the CUDA build) inside the
bundled Triton, through the gateway, from a spec with the GPU target.

Needs an NVIDIA GPU and a python environment whose ``vllm`` runs on CUDA (``LMFORGE_VLLM_ENV``,
or the running one); skipped elsewhere (see tests/conftest.py). This test has not run: the
machines here have no GPU, and the GPU machine that is sometimes lent has no vLLM.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.gpu


def _cuda_vllm_python() -> str | None:
    env = os.environ.get("LMFORGE_VLLM_ENV")
    python = str(Path(env) / "bin" / "python") if env else "python"
    if env is None and importlib.util.find_spec("vllm") is None:
        return None
    probe = "import torch, vllm, sys; sys.exit(not torch.cuda.is_available())"
    done = subprocess.run([python, "-c", probe], capture_output=True, check=False)
    return python if done.returncode == 0 else None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if _cuda_vllm_python() is None:
        pytest.skip("no vllm on CUDA here")
    from lmforge_client.client import LmforgeClient

    from gateway.processes import gateway_config, start_gateway
    from trainer.repository.builder import build_repository
    from trainer.repository.gguf_convert import smollm2_checkpoint
    from trainer.repository.spec import parse_spec
    from triton_host.launcher import TritonServer

    work = tmp_path_factory.mktemp("vllm-cuda")
    spec = parse_spec(
        {
            "models": [
                {
                    "name": "smollm2",
                    "task": "generate",
                    "target": "tensorrt",  # the GPU target: vllm on CUDA
                    "checkpoint": str(smollm2_checkpoint()),
                    "max_length": 512,
                    "generation": {
                        "max_new_tokens": 128,
                        "vllm": {"dtype": "float16", "gpu_memory_utilization": 0.3},
                    },
                }
            ]
        }
    )
    build_repository(spec, work / "repository")
    routes = [{"name": "smollm2", "task": "generate", "triton_model": "smollm2"}]
    with TritonServer(work / "repository") as triton:
        gateway = start_gateway(work / "gateway", gateway_config(triton.grpc_url, routes))
        try:
            with LmforgeClient(gateway.target, timeout=300) as client:
                client.wait_for_health("SERVING", 300)
                yield client
        finally:
            gateway.stop()


def test_smollm2_on_cuda_knows_the_capital_of_france(served: Any) -> None:
    reply = served.generate("smollm2", "The capital of France is", max_new_tokens=8)
    assert "Paris" in reply.text
    assert reply.finish_reason in ("length", "end_of_sequence")


def test_streaming_on_cuda_adds_up_to_the_unary_text(served: Any) -> None:
    options: dict[str, Any] = {"max_new_tokens": 16, "temperature": 0.8, "seed": 7}
    reply = served.generate("smollm2", "Write one sentence about the sea.", **options)
    chunks = list(served.generate_stream("smollm2", "Write one sentence about the sea.", **options))
    assert "".join(c.text for c in chunks) == reply.text
