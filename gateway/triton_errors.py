"""Translate tritonclient errors into gateway errors (pure: status string + message in)."""

from __future__ import annotations

from lmforge_client.status import FieldViolation

from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    ModelNotFound,
    Overloaded,
)
from triton_models.runtime import contract as c
from triton_models.runtime.contract import INPUT_TOO_LONG


def is_input_too_long(message: str) -> bool:
    return INPUT_TOO_LONG in message


def translate(status: str | None, message: str, *, url: str, model: str) -> GatewayError:
    """The gateway error for a Triton call on ``model`` that failed with ``status``.

    ``status`` is tritonclient's rendering of the gRPC code (``"StatusCode.UNAVAILABLE"``);
    ``message`` is the server's (or the channel's) error text.
    """
    code = (status or "").rsplit(".", 1)[-1]
    lowered = message.lower()
    if code == "DEADLINE_EXCEEDED":
        return DeadlineExceeded(f"Triton did not answer for {model!r} in time")
    if is_input_too_long(message):
        return InvalidInput.from_violations([FieldViolation("inputs", message.strip())])
    if "unknown model" in lowered or code == "NOT_FOUND":
        if "not found" in lowered or code == "NOT_FOUND":
            return ModelNotFound(f"Triton at {url} has no model {model!r}")
        return BackendUnavailable(f"Triton model {model!r} is not available: {message}")
    if "not ready" in lowered or "no available versions" in lowered:
        return BackendUnavailable(f"Triton model {model!r} is not ready: {message}")
    if code == "UNAVAILABLE" or code == "CANCELLED":
        return BackendUnavailable(f"Triton at {url} is unavailable: {message}")
    if code == "RESOURCE_EXHAUSTED" or "exceeds maximum queue size" in lowered:
        return Overloaded(f"Triton rejected the request for {model!r}: {message}")
    return BackendError(f"Triton failed on {model!r} ({code or 'no status'}): {message}")


#: the generate model's inputs, by the request field a caller of the gateway knows them as
GENERATION_FIELDS = {
    c.INPUT_PROMPT: "prompt",
    c.INPUT_MAX_NEW_TOKENS: "parameters.max_new_tokens",
    c.INPUT_TEMPERATURE: "parameters.temperature",
    c.INPUT_TOP_P: "parameters.top_p",
    c.INPUT_TOP_K: "parameters.top_k",
    c.INPUT_REPETITION_PENALTY: "parameters.repetition_penalty",
    c.INPUT_SEED: "parameters.seed",
    c.INPUT_STOP: "parameters.stop",
    c.INPUT_USE_CHAT_TEMPLATE: "use_chat_template",
    c.INPUT_CHAT_ROLES: "messages",
    c.INPUT_TRUNCATE: "truncation",
}


def translate_generation(status: str | None, message: str, *, url: str, model: str) -> GatewayError:
    """As :func:`translate`, plus the generate model's own refusals: full (capacity) →
    ``Overloaded``; a bad parameter or a too-long prompt → ``InvalidInput`` naming the field."""
    if c.GENERATE_CAPACITY in message:
        reason = message[message.index(c.GENERATE_CAPACITY) + len(c.GENERATE_CAPACITY) :]
        return Overloaded(f"{model!r} is generating at capacity{reason}")
    found = c.invalid_parameter(message)
    if found is not None:
        name, why = found
        return InvalidInput.from_violations(
            [FieldViolation(GENERATION_FIELDS.get(name, name), why)]
        )
    rows = c.too_long_rows(message)
    if rows:
        tokens = max(rows.values())
        return InvalidInput.from_violations(
            [
                FieldViolation(
                    "prompt",
                    f"{INPUT_TOO_LONG}: {tokens} tokens, more than the model's maximum "
                    "(set truncation to cut it)",
                )
            ]
        )
    return translate(status, message, url=url, model=model)
