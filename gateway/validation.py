"""Request checks that need nothing but the request and the limits (pure functions).

The engine's boundary: every engine request passes one ``validate_*`` before anything else
looks at it, so the number of inputs, their lengths and the parameters are checked here and
nowhere else. Each ``check_*`` returns the field violations it found; the ``validate_*``
functions gather all of them and raise one :class:`~gateway.errors.InvalidInput`, so a caller
learns about every problem at once. Field names follow the proto (``inputs[3]``, ``top_k``,
``dimensions``); wire-only fields (the truncation enum) are the transport's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lmforge_client.status import FieldViolation

from gateway.backend import GenerationParams
from gateway.config import LimitsConfig
from gateway.engine_types import ClassifyRequest, EmbedRequest, GenerateRequest
from gateway.errors import InvalidInput
from triton_models.runtime import contract as c


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
                f"has {len(inputs)} texts; at most {limits.max_inputs_per_request} per request "
                "(limits.max_inputs_per_request)",
            )
        )
    for index, text in enumerate(inputs):
        found.extend(check_text(f"inputs[{index}]", text, limits))
    return found


def check_text(field: str, text: str, limits: LimitsConfig) -> list[FieldViolation]:
    """One text: not empty, within the character limit and (a lower bound of) the token limit."""
    if not text:
        return [FieldViolation(field, "is empty")]
    if len(text) > limits.max_chars_per_input:
        return [
            FieldViolation(
                field,
                f"has {len(text)} characters; at most {limits.max_chars_per_input} "
                "(limits.max_chars_per_input)",
            )
        ]
    limit = limits.max_tokens_per_input
    if limit is not None:
        words = len(text.split())  # every word is at least one token
        if words > limit:
            return [
                FieldViolation(
                    field,
                    f"has at least {words} tokens; at most {limit} (limits.max_tokens_per_input)",
                )
            ]
    return []


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
        found.extend(check_text(f"pairs[{index}]", text, limits))
    return found


def check_pairs_for_model(model: str, pairs_given: bool, text_pairs: bool) -> list[FieldViolation]:
    """A pair model needs ``pairs``; a single-text model refuses them."""
    if text_pairs and not pairs_given:
        return [FieldViolation("pairs", f"{model!r} reads sentence pairs: give one per input")]
    if pairs_given and not text_pairs:
        return [FieldViolation("pairs", f"{model!r} reads single texts; leave pairs empty")]
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


def validate_classify(request: ClassifyRequest, limits: LimitsConfig) -> None:
    raise_if_any(
        [
            *check_model_name(request.model),
            *check_inputs(request.inputs, limits),
            *check_pairs(request.pairs, len(request.inputs), limits),
            *check_top_k(request.top_k),
        ]
    )


def validate_embed(request: EmbedRequest, limits: LimitsConfig) -> None:
    raise_if_any(
        [
            *check_model_name(request.model),
            *check_inputs(request.inputs, limits),
            *check_dimensions(request.dimensions, None),
        ]
    )


def check_prompt(
    prompt: str, limits: LimitsConfig, messages: tuple[tuple[str, str], ...] = ()
) -> list[FieldViolation]:
    """A prompt, or a conversation (``messages``) and no prompt; their characters within
    ``limits.max_prompt_chars``."""
    if messages:
        if prompt:
            return [FieldViolation("prompt", "must be empty when messages are given")]
        found = [
            FieldViolation(
                f"messages[{i}].role", f"is {role!r}; expected one of {list(c.CHAT_ROLES)}"
            )
            for i, (role, _) in enumerate(messages)
            if role not in c.CHAT_ROLES
        ]
        found += [
            FieldViolation(f"messages[{i}].content", "is empty")
            for i, (_, content) in enumerate(messages)
            if not content
        ]
        if found:
            return found
        name, length = "messages", sum(len(content) for _, content in messages)
    elif not prompt:
        return [FieldViolation("prompt", "is empty")]
    else:
        name, length = "prompt", len(prompt)
    if length > limits.max_prompt_chars:
        return [
            FieldViolation(
                name,
                f"has {length} characters; at most {limits.max_prompt_chars} "
                "(limits.max_prompt_chars)",
            )
        ]
    return []


def check_generation(params: GenerationParams, limits: LimitsConfig) -> list[FieldViolation]:
    """Sampling parameters within range; field names as in ``GenerateRequest``."""
    found: list[FieldViolation] = []

    def bad(name: str, why: str) -> None:
        found.append(FieldViolation(f"parameters.{name}", why))

    if params.max_new_tokens > limits.max_new_tokens:
        bad(
            "max_new_tokens",
            f"is {params.max_new_tokens}; at most {limits.max_new_tokens} (limits.max_new_tokens)",
        )
    if not 0 <= params.temperature <= 100:
        bad("temperature", f"must be between 0 and 100, got {params.temperature}")
    if not 0 <= params.top_p <= 1:
        bad("top_p", f"must be between 0 and 1, got {params.top_p}")
    if params.top_k < 0:
        bad("top_k", f"must be >= 0 (0 disables it), got {params.top_k}")
    if not 0 <= params.repetition_penalty <= 100:
        bad("repetition_penalty", f"must be between 0 and 100, got {params.repetition_penalty}")
    if len(params.stop) > limits.max_stop_sequences:
        bad(
            "stop",
            f"has {len(params.stop)} strings; at most {limits.max_stop_sequences} "
            "(limits.max_stop_sequences)",
        )
    for index, stop in enumerate(params.stop):
        if not stop:
            found.append(FieldViolation(f"parameters.stop[{index}]", "is empty"))
        elif len(stop) > limits.max_stop_chars:
            found.append(
                FieldViolation(
                    f"parameters.stop[{index}]",
                    f"has {len(stop)} characters; at most {limits.max_stop_chars} "
                    "(limits.max_stop_chars)",
                )
            )
    return found


def check_max_new_tokens(max_new_tokens: int, model_limit: int | None) -> list[FieldViolation]:
    """The request's ``max_new_tokens`` against the model's own limit."""
    if model_limit is not None and max_new_tokens > model_limit:
        return [
            FieldViolation(
                "parameters.max_new_tokens",
                f"is {max_new_tokens}; the model generates at most {model_limit}",
            )
        ]
    return []


def validate_generate(request: GenerateRequest, limits: LimitsConfig) -> None:
    raise_if_any(
        [
            *check_model_name(request.model),
            *check_prompt(request.prompt, limits, request.params.messages),
            *check_generation(request.params, limits),
        ]
    )
