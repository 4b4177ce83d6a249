"""OpenAI (and text-embeddings-inference) JSON ↔ engine types, both ways: pure, no I/O.

The HTTP app (:mod:`gateway.http_app`) is these conversions around engine calls, as the gRPC
servicer is :mod:`gateway.wire` around them. Request bodies are pydantic models that allow
the extra fields OpenAI clients send (``user``, ``logit_bias``, …) and refuse, as
:class:`~gateway.errors.InvalidInput`, the ones that would change the answer in a way the
engine cannot honour (``n`` > 1, tools, logprobs).

A chat completion is the engine's generate request with a conversation (``messages``, as
``GenerateStream`` takes them), rendered by the model's chat template inside Triton; OpenAI's
``developer`` role is the template's ``system``.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any, Literal

import numpy as np
from lmforge_client.status import FieldViolation
from pydantic import BaseModel, ConfigDict, Field

from gateway.backend import FloatArray, GenerationParams
from gateway.engine_types import (
    Classification,
    ClassifyRequest,
    Embeddings,
    EmbedRequest,
    GenerateRequest,
    GenerationChunk,
    ModelInfo,
    Routing,
)
from gateway.errors import InvalidInput
from triton_models.runtime import contract as c

#: contract finish reasons → OpenAI's
FINISH_REASONS = {
    c.FINISH_END_OF_SEQUENCE: "stop",
    c.FINISH_STOP_SEQUENCE: "stop",
    c.FINISH_LENGTH: "length",
    c.FINISH_CANCELLED: "stop",
}
OWNED_BY = "lmforge"


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


# -- request bodies --------------------------------------------------------------------------
class EmbeddingsBody(_Body):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class _SamplingBody(_Body):
    model: str
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: Any = None
    #: lmforge: ``TRUNCATION_END`` (true) or ``TRUNCATION_NONE`` (false) for a long prompt
    truncate: bool = True


class CompletionBody(_SamplingBody):
    prompt: str | list[str]
    echo: bool = False


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: str
    content: str | list[TextPart] | None = None


class ChatBody(_SamplingBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    tools: Any = None
    functions: Any = None


class PredictBody(_Body):
    """text-embeddings-inference's ``POST /predict``; ``model`` (lmforge) picks the
    classifier when the gateway serves more than one."""

    inputs: str | list[str]
    model: str | None = None
    truncate: bool = True


# -- requests --------------------------------------------------------------------------------
def _refuse(field: str, description: str) -> InvalidInput:
    return InvalidInput.from_violations([FieldViolation(field, description)])


def embed_request(body: EmbeddingsBody, routing: Routing, caller: str | None) -> EmbedRequest:
    inputs = (body.input,) if isinstance(body.input, str) else tuple(body.input)
    return EmbedRequest(
        model=body.model,
        inputs=inputs,
        dimensions=body.dimensions,
        routing=routing,
        caller=caller,
    )


def classify_request(
    body: PredictBody, model: str, routing: Routing, caller: str | None
) -> ClassifyRequest:
    inputs = (body.inputs,) if isinstance(body.inputs, str) else tuple(body.inputs)
    return ClassifyRequest(
        model=model, inputs=inputs, truncate=body.truncate, routing=routing, caller=caller
    )


def _check_sampling(body: _SamplingBody) -> None:
    if body.n != 1:
        raise _refuse("n", "only one choice per request (n: 1)")
    if body.logprobs not in (None, False, 0):
        raise _refuse("logprobs", "log probabilities are not returned")


def _params(body: _SamplingBody, max_tokens: int | None, chat: bool) -> GenerationParams:
    stop = () if body.stop is None else (body.stop,) if isinstance(body.stop, str) else body.stop
    return GenerationParams(
        max_new_tokens=max_tokens or 0,
        temperature=0.0 if body.temperature is None else body.temperature,
        top_p=0.0 if body.top_p is None else body.top_p,
        stop=tuple(stop),
        seed=body.seed,
        use_chat_template=chat,
    )


def completion_request(
    body: CompletionBody, routing: Routing, caller: str | None
) -> GenerateRequest:
    _check_sampling(body)
    if body.echo:
        raise _refuse("echo", "the prompt is not echoed")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise _refuse("prompt", f"one prompt per request, not {len(prompts)}")
    return GenerateRequest(
        model=body.model,
        prompt=prompts[0],
        params=_params(body, body.max_tokens, chat=False),
        truncate=body.truncate,
        routing=routing,
        caller=caller,
    )


#: OpenAI's role names → the chat template's
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _turn(index: int, message: ChatMessage) -> tuple[str, str]:
    role = _ROLES.get(message.role)
    if role is None:
        raise _refuse(
            f"messages.{index}.role",
            f"is {message.role!r}; served roles are {sorted(_ROLES)} (no tool messages)",
        )
    if message.content is None:
        raise _refuse(f"messages.{index}.content", "is missing")
    if isinstance(message.content, str):
        return role, message.content
    return role, "".join(part.text for part in message.content)


def chat_request(body: ChatBody, routing: Routing, caller: str | None) -> GenerateRequest:
    _check_sampling(body)
    if body.tools is not None or body.functions is not None:
        raise _refuse("tools", "tool calls are not supported")
    max_tokens = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    params = _params(body, max_tokens, chat=True)
    messages = tuple(_turn(i, m) for i, m in enumerate(body.messages))
    return GenerateRequest(
        model=body.model,
        prompt="",
        params=dataclasses.replace(params, messages=messages),
        truncate=body.truncate,
        routing=routing,
        caller=caller,
    )


def model_for_predict(body: PredictBody, classifiers: list[str]) -> str:
    """The classifier a ``/predict`` call means: its ``model``, or the only one served."""
    if body.model is not None:
        return body.model
    if len(classifiers) == 1:
        return classifiers[0]
    raise _refuse("model", f"name one of the classifiers {sorted(classifiers)}")


# -- responses -------------------------------------------------------------------------------
def encode_vector(row: FloatArray, encoding: str) -> list[float] | str:
    """One embedding as OpenAI sends it: floats, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")
    return [float(v) for v in row]


def usage(prompt_tokens: int, completion_tokens: int | None = None) -> dict[str, int]:
    if completion_tokens is None:
        return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def embeddings_response(result: Embeddings, model: str, encoding: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(row, encoding)}
            for i, row in enumerate(result.vectors)
        ],
        "model": model,
        "usage": usage(int(sum(result.input_tokens))),
    }


def predict_response(
    results: tuple[Classification, ...], single: bool
) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    """text-embeddings-inference's shape: ``[{"label", "score"}]`` by descending score, one
    list per input (a bare list for a single string input)."""
    rows = [
        [{"label": label, "score": score} for label, score in sorted(r.labels, key=lambda x: -x[1])]
        for r in results
    ]
    return rows[0] if single else rows


def model_object(info: ModelInfo, created: int) -> dict[str, Any]:
    return {
        "id": info.name,
        "object": "model",
        "created": created,
        "owned_by": OWNED_BY,
        "task": info.task,
        "ready": info.ready,
    }


def finish_reason(chunk: GenerationChunk) -> str | None:
    return None if chunk.finish_reason is None else FINISH_REASONS[chunk.finish_reason]


def completion_object(
    ident: str, created: int, model: str, text: str, last: GenerationChunk, chat: bool
) -> dict[str, Any]:
    """A whole (non-streamed) completion or chat completion."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason(last), "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": ident,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(last.input_tokens, last.output_tokens),
    }


def chunk_object(
    ident: str,
    created: int,
    model: str,
    chat: bool,
    *,
    text: str | None,
    finish: str | None = None,
    role: bool = False,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One streamed chunk. ``text`` None: no content (the closing chunk); ``role``: the first
    chat chunk, which names the assistant; with ``include_usage`` every chunk carries
    ``"usage": null`` as OpenAI's do, the usage itself comes in :func:`usage_chunk`."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    chunk: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
    }
    if include_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(
    ident: str, created: int, model: str, chat: bool, last: GenerationChunk
) -> dict[str, Any]:
    """The extra last chunk of ``stream_options.include_usage``: no choices, the usage."""
    return {
        "id": ident,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage(last.input_tokens, last.output_tokens),
    }
