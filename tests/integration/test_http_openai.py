"""The OpenAI-compatible HTTP API end to end, with the official ``openai`` package: demo
repository → real tritonserver → real gateway process (gRPC and HTTP on one engine, API keys
configured) → answers equal to the gRPC ones, and the refusals as OpenAI clients expect them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import openai
import pytest
from lmforge_client.client import LmforgeClient

from gateway.auth import hash_key
from gateway.processes import GatewayProcess, gateway_config, start_gateway
from lmforge_core.net import free_ports
from trainer.repository.demo_serving import DEMO_MODELS

pytestmark = pytest.mark.integration

ALL, EMBED_ONLY, SLOW = "key-all", "key-embed-only", "key-one-call"
TEXTS = ["lmforge serves typed APIs.", "The sea was calm tonight.", "a gorgeous, witty movie"]


@pytest.fixture(scope="module")
def triton(demo_repository: Path) -> Iterator[Any]:
    from triton_host.launcher import TritonServer

    with TritonServer(demo_repository) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    triton: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    (http_port,) = free_ports(1)
    config = gateway_config(triton.grpc_url, DEMO_MODELS)
    config["server"]["http_port"] = http_port
    config["auth"] = {
        "keys": [
            {"name": "all", "sha256": hash_key(ALL)},
            {"name": "embedder", "sha256": hash_key(EMBED_ONLY), "models": ["minilm"]},
            # one call, then a refill every 1000 s: the second call is refused deterministically
            {"name": "slow", "sha256": hash_key(SLOW), "rate_per_s": 0.001, "burst": 1},
        ]
    }
    process = start_gateway(
        tmp_path_factory.mktemp("gateway"), config, wait_serving=True, api_key=ALL, timeout=180
    )
    yield process, f"http://127.0.0.1:{http_port}/v1"
    process.stop()


@pytest.fixture(scope="module")
def grpc_client(gateway: tuple[GatewayProcess, str]) -> Iterator[LmforgeClient]:
    with LmforgeClient(gateway[0].target, api_key=ALL, timeout=120) as client:
        yield client


def openai_client(gateway: tuple[GatewayProcess, str], key: str = ALL) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway[1], api_key=key, max_retries=0, timeout=120)


def test_openai_embeddings_equal_grpc_embed(
    gateway: tuple[GatewayProcess, str], grpc_client: LmforgeClient
) -> None:
    client = openai_client(gateway)
    default = client.embeddings.create(model="minilm", input=TEXTS)  # the client asks base64
    floats = client.embeddings.create(model="minilm", input=TEXTS, encoding_format="float")
    reference = np.array(grpc_client.embed("minilm", TEXTS).embeddings)
    for reply in (default, floats):
        vectors = np.array([d.embedding for d in sorted(reply.data, key=lambda d: d.index)])
        assert vectors.shape == reference.shape == (3, 384)
        cosine = np.sum(vectors * reference, axis=1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
        )
        assert cosine.min() >= 0.99999, cosine
        assert reply.usage.prompt_tokens > 0
    short = client.embeddings.create(model="minilm", input="hello", dimensions=64)
    assert len(short.data[0].embedding) == 64


def test_streamed_chat_equals_grpc_generate_stream_for_the_same_seed(
    gateway: tuple[GatewayProcess, str], grpc_client: LmforgeClient
) -> None:
    prompt = "Write one sentence about the sea."
    stream = openai_client(gateway).chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=24,
        temperature=0.8,
        top_p=0.95,
        seed=7,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    usage = chunks[-1].usage
    reference = list(
        grpc_client.generate_stream(
            "smollm2", prompt, max_new_tokens=24, temperature=0.8, top_p=0.95, seed=7,
            use_chat_template=True,
        )
    )  # fmt: skip
    assert text and text == "".join(c.text for c in reference)
    assert finish == ["length" if reference[-1].finish_reason == "length" else "stop"]
    assert usage is not None and usage.completion_tokens == reference[-1].usage.output_tokens
    assert usage.prompt_tokens == reference[-1].usage.input_tokens


def test_a_conversation_is_served_whole_over_both_protocols(
    gateway: tuple[GatewayProcess, str], grpc_client: LmforgeClient
) -> None:
    turns = [
        {"role": "system", "content": "You answer with one word."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]
    reply = openai_client(gateway).chat.completions.create(
        model="smollm2",
        messages=turns,  # type: ignore[arg-type]
        max_tokens=8,
    )
    reference = grpc_client.generate("smollm2", "", max_new_tokens=8, messages=turns)
    assert reply.choices[0].message.content == reference.text
    assert "Rome" in reference.text, reference.text
    last_only = grpc_client.generate("smollm2", "", max_new_tokens=8, messages=turns[-1:])
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == reference.usage.input_tokens
    # every turn is read (the template puts its default system prompt before a lone user turn)
    assert reference.usage.input_tokens > last_only.usage.input_tokens


def test_completion_knows_the_capital_of_france(gateway: tuple[GatewayProcess, str]) -> None:
    reply = openai_client(gateway).completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=12
    )
    assert "Paris" in reply.choices[0].text, reply.choices[0].text
    assert reply.usage is not None and reply.usage.prompt_tokens == 5


def test_models_and_predict(gateway: tuple[GatewayProcess, str]) -> None:
    models = {m.id for m in openai_client(gateway).models.list()}
    assert models == {"minilm", "sentiment", "smollm2"}
    reply = httpx.post(
        gateway[1].removesuffix("/v1") + "/predict",
        json={"inputs": ["a gorgeous, witty, seductive movie.", "the plot is dull and slow."]},
        headers={"authorization": f"Bearer {ALL}"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert [r[0]["label"] for r in reply.json()] == ["positive", "negative"]


def test_a_missing_or_unknown_key_is_401(gateway: tuple[GatewayProcess, str]) -> None:
    with pytest.raises(openai.AuthenticationError) as unknown:
        openai_client(gateway, "not-a-key").embeddings.create(model="minilm", input="x")
    assert unknown.value.status_code == 401
    missing = httpx.post(f"{gateway[1]}/embeddings", json={"model": "minilm", "input": "x"})
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"


def test_a_model_outside_the_key_is_403(gateway: tuple[GatewayProcess, str]) -> None:
    client = openai_client(gateway, EMBED_ONLY)
    assert len(client.embeddings.create(model="minilm", input="x").data) == 1
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert "smollm2" in denied.value.message


def test_a_key_over_its_rate_limit_is_429_with_retry_after(
    gateway: tuple[GatewayProcess, str],
) -> None:
    client = openai_client(gateway, SLOW)
    client.embeddings.create(model="minilm", input="x")
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.create(model="minilm", input="x")
    assert refused.value.status_code == 429
    assert int(refused.value.response.headers["retry-after"]) >= 900
