from __future__ import annotations

import numpy as np
import pytest
from lmforge_client.status import FieldViolation

from gateway.config import LimitsConfig
from gateway.engine_types import ClassifyRequest, EmbedRequest
from gateway.errors import InvalidInput
from gateway.postprocess import rank_labels, shape_embeddings
from gateway.validation import (
    check_dimensions,
    check_inputs,
    check_top_k,
    validate_classify,
    validate_embed,
)
from gateway.wire import check_truncation, truncate_flag

LIMITS = LimitsConfig(max_inputs_per_request=3, max_chars_per_input=10)


def fields(violations: list[FieldViolation]) -> list[str]:
    return [v.field for v in violations]


def test_inputs_must_not_be_empty_list() -> None:
    assert fields(check_inputs([], LIMITS)) == ["inputs"]


def test_each_empty_string_is_named_by_index() -> None:
    assert fields(check_inputs(["a", "", "b"], LIMITS)) == ["inputs[1]"]


def test_too_many_inputs_is_reported_on_inputs() -> None:
    found = check_inputs(["a"] * 4, LIMITS)
    assert fields(found) == ["inputs"]
    assert "at most 3" in found[0].description


def test_input_longer_than_char_limit_is_named_by_index() -> None:
    found = check_inputs(["short", "x" * 11], LIMITS)
    assert fields(found) == ["inputs[1]"]
    assert "11 characters" in found[0].description


def test_unknown_truncation_value_is_rejected() -> None:
    assert check_truncation(0) == check_truncation(1) == check_truncation(2) == []
    assert fields(check_truncation(7)) == ["truncation"]


def test_truncation_none_means_do_not_truncate() -> None:
    assert truncate_flag(0) and truncate_flag(1)
    assert not truncate_flag(2)
    with pytest.raises(InvalidInput) as info:  # the wire enum is the transport's to check
        truncate_flag(9)
    assert fields(list(info.value.violations)) == ["truncation"]


def test_negative_top_k_is_rejected() -> None:
    assert check_top_k(0) == [] and check_top_k(5) == []
    assert fields(check_top_k(-1)) == ["top_k"]


@pytest.mark.parametrize(
    ("dims", "ok"), [(None, True), (1, True), (8, True), (0, False), (9, False), (-2, False)]
)
def test_dimensions_must_be_within_model_dimension(dims: int | None, ok: bool) -> None:
    assert (check_dimensions(dims, 8) == []) is ok


def test_validate_collects_every_violation_in_one_error() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_classify(ClassifyRequest("", ("", "x" * 11), top_k=-1), LIMITS)
    assert fields(list(info.value.violations)) == ["model", "inputs[0]", "inputs[1]", "top_k"]


def test_validate_embed_accepts_a_good_request() -> None:
    validate_embed(EmbedRequest("minilm", ("hello",), dimensions=4), LIMITS)


def test_rank_labels_sorts_descending_and_keeps_top_k() -> None:
    probs = np.array([0.2, 0.5, 0.3], dtype=np.float32)
    ranked = rank_labels(probs, ["a", "b", "c"], 0)
    assert [label for label, _ in ranked] == ["b", "c", "a"]
    assert [label for label, _ in rank_labels(probs, ["a", "b", "c"], 2)] == ["b", "c"]
    assert len(rank_labels(probs, ["a", "b", "c"], 10)) == 3


def test_shape_embeddings_truncates_then_renormalizes() -> None:
    vectors = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    out = shape_embeddings(vectors, 2, normalize=True)
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0.0, 0.0])  # zero rows stay zero
    raw = shape_embeddings(vectors, 2, normalize=False)
    np.testing.assert_array_equal(raw, vectors[:, :2])


@pytest.mark.parametrize(
    ("prompt", "messages", "field"),
    [
        ("hi", (("user", "hi"),), "prompt"),
        ("", (("narrator", "hi"),), "messages[0].role"),
        ("", (("system", "be brief"), ("user", "")), "messages[1].content"),
        ("", (("user", "x" * 40),), "messages"),
    ],
)
def test_a_conversation_replaces_the_prompt_and_each_turn_is_checked(
    prompt: str, messages: tuple[tuple[str, str], ...], field: str
) -> None:
    from gateway.validation import check_prompt

    found = check_prompt(prompt, LimitsConfig(max_prompt_chars=32), messages)
    assert [v.field for v in found] == [field]
    assert check_prompt("", LimitsConfig(), (("system", "a"), ("user", "b"))) == []
