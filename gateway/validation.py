"""Request checks that need nothing but the request and the limits (pure functions).

Each ``check_*`` returns the field violations it found; the ``validate_*`` functions gather
all of them and raise one :class:`~gateway.errors.InvalidInput`, so a caller learns about every
problem at once. Field names follow the proto (``inputs[3]``, ``top_k``, ``dimensions``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway._proto.lmforge.v1 import common_pb2
from gateway.config import LimitsConfig
from gateway.errors import FieldViolation, InvalidInput

KNOWN_TRUNCATIONS = frozenset(common_pb2.Truncation.values())


def check_model_name(model: str) -> list[FieldViolation]:
    if not model:
        return [FieldViolation("model", "must name a model (see ListModels)")]
    return []


def check_inputs(inputs: Sequence[str], limits: LimitsConfig) -> list[FieldViolation]:
    if not inputs:
        return [FieldViolation("inputs", "must contain at least one text")]
    found: list[FieldViolation] = []
    if len(inputs) > limits.max_inputs_per_request:
        found.append(
            FieldViolation(
                "inputs",
                f"has {len(inputs)} texts; at most {limits.max_inputs_per_request} per request",
            )
        )
    for index, text in enumerate(inputs):
        if not text:
            found.append(FieldViolation(f"inputs[{index}]", "is empty"))
        elif len(text) > limits.max_chars_per_input:
            found.append(
                FieldViolation(
                    f"inputs[{index}]",
                    f"has {len(text)} characters; at most {limits.max_chars_per_input}",
                )
            )
    return found


def check_pairs(
    pairs: Sequence[str], num_inputs: int, limits: LimitsConfig
) -> list[FieldViolation]:
    """``pairs`` is empty or holds one non-empty second text per input."""
    if not pairs:
        return []
    if len(pairs) != num_inputs:
        return [
            FieldViolation(
                "pairs", f"has {len(pairs)} texts; give none or one per input ({num_inputs})"
            )
        ]
    found = []
    for index, text in enumerate(pairs):
        if not text:
            found.append(FieldViolation(f"pairs[{index}]", "is empty"))
        elif len(text) > limits.max_chars_per_input:
            found.append(
                FieldViolation(
                    f"pairs[{index}]",
                    f"has {len(text)} characters; at most {limits.max_chars_per_input}",
                )
            )
    return found


def check_pairs_for_model(model: str, pairs_given: bool, text_pairs: bool) -> list[FieldViolation]:
    """A pair model needs ``pairs``; a single-text model refuses them."""
    if text_pairs and not pairs_given:
        return [FieldViolation("pairs", f"{model!r} reads sentence pairs: give one per input")]
    if pairs_given and not text_pairs:
        return [FieldViolation("pairs", f"{model!r} reads single texts; leave pairs empty")]
    return []


def check_truncation(truncation: int) -> list[FieldViolation]:
    if truncation not in KNOWN_TRUNCATIONS:
        return [FieldViolation("truncation", f"unknown value {truncation}")]
    return []


def check_top_k(top_k: int) -> list[FieldViolation]:
    if top_k < 0:
        return [FieldViolation("top_k", f"must be >= 0 (0 returns all labels), got {top_k}")]
    return []


def check_dimensions(dimensions: int | None, model_dimension: int | None) -> list[FieldViolation]:
    if dimensions is None:
        return []
    if dimensions < 1:
        return [FieldViolation("dimensions", f"must be >= 1, got {dimensions}")]
    if model_dimension is not None and dimensions > model_dimension:
        return [
            FieldViolation(
                "dimensions",
                f"must be <= the model's dimension {model_dimension}, got {dimensions}",
            )
        ]
    return []


def raise_if_any(violations: Iterable[FieldViolation]) -> None:
    found = list(violations)
    if found:
        raise InvalidInput.from_violations(found)


def truncate_flag(truncation: int) -> bool:
    """The contract's ``TRUNCATE`` value for a (validated) truncation enum value."""
    return truncation != common_pb2.TRUNCATION_NONE


def validate_classify(
    model: str,
    inputs: Sequence[str],
    truncation: int,
    top_k: int,
    limits: LimitsConfig,
    pairs: Sequence[str] = (),
) -> None:
    raise_if_any(
        [
            *check_model_name(model),
            *check_inputs(inputs, limits),
            *check_pairs(pairs, len(inputs), limits),
            *check_truncation(truncation),
            *check_top_k(top_k),
        ]
    )


def validate_embed(
    model: str,
    inputs: Sequence[str],
    truncation: int,
    dimensions: int | None,
    limits: LimitsConfig,
) -> None:
    raise_if_any(
        [
            *check_model_name(model),
            *check_inputs(inputs, limits),
            *check_truncation(truncation),
            *check_dimensions(dimensions, None),
        ]
    )
