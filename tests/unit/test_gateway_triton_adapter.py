"""The Triton adapter's pure parts, and its behaviour when no Triton is listening."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.backend import ModelTarget, TextRows
from gateway.errors import BackendError, BackendUnavailable
from gateway.triton_backend import TritonBackend
from gateway.triton_contract import parse_model_config


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
