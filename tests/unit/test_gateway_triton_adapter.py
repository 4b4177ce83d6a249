"""The Triton adapter's pure parts, its behaviour when no Triton is listening, and its
chunking, offsets and error translation against a fake tritonclient transport."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from gateway.backend import ModelTarget, TextRows
from gateway.errors import BackendError, BackendUnavailable, InvalidInput, ModelNotFound, Overloaded
from gateway.triton_backend import TritonBackend
from gateway.triton_contract import parse_model_config
from triton_models.runtime import contract as c


def config(**params: str) -> dict[str, Any]:
    return {
        "name": "m",
        "max_batch_size": 8,
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    }


def test_parse_model_config_reads_classify_parameters() -> None:
    meta, max_batch_size = parse_model_config(
        "m",
        config(
            lmforge_task="classify",
            lmforge_labels='["neg", "pos"]',
            lmforge_max_length="128",
        ),
    )
    assert meta.task == "classify" and meta.labels == ("neg", "pos")
    assert meta.max_length == 128 and meta.dimension is None
    assert max_batch_size == 8


def test_parse_model_config_reads_embed_parameters() -> None:
    meta, _ = parse_model_config("m", config(lmforge_task="embed", lmforge_dimension="384"))
    assert meta.task == "embed" and meta.dimension == 384 and meta.max_length is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "lmforge_task"),
        ({"lmforge_task": "translate"}, "lmforge_task"),
        ({"lmforge_task": "classify", "lmforge_labels": "{}"}, "lmforge_labels"),
        ({"lmforge_task": "classify", "lmforge_labels": "not json"}, "bad lmforge parameters"),
        ({"lmforge_task": "embed", "lmforge_dimension": "wide"}, "bad lmforge parameters"),
    ],
)
def test_parse_model_config_rejects_models_that_break_the_contract(
    params: dict[str, str], message: str
) -> None:
    with pytest.raises(BackendError, match=message):
        parse_model_config("m", config(**params))


async def test_calls_fail_fast_with_backend_unavailable_when_triton_is_down() -> None:
    backend = TritonBackend("127.0.0.1:1", connect_timeout=1.0)
    target = ModelTarget("minilm", "embed", "minilm")
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await backend.embed(target, TextRows(("a",), (True,)), timeout=10)
        assert not await backend.ready()
        assert not await backend.ready(target)
        assert time.monotonic() - started < 2.0
    finally:
        await backend.close()


# -- against a fake Triton transport (the tritonclient.grpc.aio client object) ----------------
class FakeTritonClient:
    """What :class:`TritonBackend` calls on ``tritonclient.grpc.aio.InferenceServerClient``:
    one embed model ``m`` (max_batch_size 2) whose vectors are the row's text length."""

    def __init__(self) -> None:
        self.infers: list[list[str]] = []  # texts of each infer call, in call order
        self.fail: dict[str, InferenceServerException] = {}  # by first text of a chunk
        self.closed = False

    async def is_server_ready(self, client_timeout: float | None = None) -> bool:
        return True

    async def is_model_ready(self, name: str, version: str = "", **_: Any) -> bool:
        return name == "m"

    async def get_model_config(self, name: str, version: str = "", **_: Any) -> dict[str, Any]:
        if name != "m":
            raise InferenceServerException(
                f"Request for unknown model: '{name}' is not found", status="StatusCode.NOT_FOUND"
            )
        return {
            "config": {**config(lmforge_task="embed", lmforge_dimension="2"), "max_batch_size": 2}
        }

    async def infer(self, model: str, inputs: list[Any], **_: Any) -> Any:
        raw = inputs[0]._get_content()  # InferInput has no public reader
        texts = [v.decode() for v in deserialize_bytes_tensor(raw)]
        self.infers.append(texts)
        failure = self.fail.get(texts[0])
        if failure is not None:
            raise failure
        vectors = np.array([[len(t), 0.0] for t in texts], dtype=np.float32)
        tokens = np.array([[len(t.split()) + 2] for t in texts], dtype=np.int32)
        return _InferResult({c.OUTPUT_EMBEDDING: vectors, c.OUTPUT_NUM_TOKENS: tokens})

    async def close(self) -> None:
        self.closed = True


class _InferResult:
    def __init__(self, arrays: dict[str, Any]) -> None:
        self._arrays = arrays

    def as_numpy(self, name: str) -> Any:
        return self._arrays.get(name)

    def get_response(self) -> Any:
        return type("Response", (), {"model_version": "4"})()


def adapter(client: FakeTritonClient) -> TritonBackend:
    return TritonBackend("t:1", client=client)  # type: ignore[arg-type]


TARGET = ModelTarget("m", "embed", "m", 1)


async def test_a_batch_larger_than_max_batch_size_is_split_into_chunks_in_order() -> None:
    client = FakeTritonClient()
    texts = ("a", "bb", "ccc", "dddd", "eeeee")
    result = await adapter(client).embed(TARGET, TextRows(texts, (True,) * 5), timeout=5)
    assert sorted(client.infers) == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
    assert result.vectors[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]  # back in input order
    assert result.num_tokens == (3, 3, 3, 3, 3) and result.version == "1"


async def test_an_input_too_long_in_a_later_chunk_is_named_by_its_offset_in_the_batch() -> None:
    client = FakeTritonClient()
    message = c.input_too_long_message({1: 900}, 512)  # row 1 of the second chunk
    client.fail["ccc"] = InferenceServerException(message, status="StatusCode.INVALID_ARGUMENT")
    texts = ("a", "bb", "ccc", "dddd")
    with pytest.raises(InvalidInput) as info:
        await adapter(client).embed(TARGET, TextRows(texts, (False,) * 4), timeout=5)
    assert [v.field for v in info.value.violations] == ["inputs[3]"]


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        ("StatusCode.UNAVAILABLE", "Socket closed", BackendUnavailable),
        ("StatusCode.RESOURCE_EXHAUSTED", "queue full", Overloaded),
        ("StatusCode.INTERNAL", "model crashed", BackendError),
    ],
)
async def test_triton_errors_are_translated_to_gateway_errors(
    status: str, message: str, error: type[Exception]
) -> None:
    client = FakeTritonClient()
    client.fail["a"] = InferenceServerException(message, status=status)
    with pytest.raises(error):
        await adapter(client).embed(TARGET, TextRows(("a",), (True,)), timeout=5)


async def test_an_unknown_model_is_model_not_found_and_close_closes_the_transport() -> None:
    client = FakeTritonClient()
    backend = adapter(client)
    with pytest.raises(ModelNotFound):
        await backend.model_info(ModelTarget("x", "embed", "nope"))
    assert await backend.ready() and not await backend.ready(ModelTarget("x", "embed", "nope"))
    await backend.close()
    assert client.closed
