"""A generate model's settings and one request's inputs (the ``contract.INPUT_*`` tensors),
read and checked the same way by every generation engine. ``get`` returns an input's values as a numpy array, or ``None``
when the request left it out."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import contract
from .params import string_parameters
from .sampling import SamplingParams, parameter_problems
from .text import decode_texts

Get = Callable[[str], "npt.NDArray[Any] | None"]


class RequestError(ValueError):
    """The request is refused; ``code`` names the Triton error code to answer with."""

    def __init__(self, message: str, code: str = "INVALID_ARG") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    params: SamplingParams
    use_chat_template: bool
    truncate: bool
    messages: tuple[tuple[str, str], ...] = ()  # (role, content): a conversation instead


def _conversation(get: Get, contents: list[str]) -> tuple[tuple[str, str], ...]:
    """``CHAT_ROLES`` paired with the ``PROMPT`` elements, or ``()`` without roles."""
    role_values = get(contract.INPUT_CHAT_ROLES)
    if role_values is None:
        if len(contents) != 1:
            raise RequestError(
                contract.invalid_parameter_message(
                    contract.INPUT_PROMPT, f"needs one text, got {len(contents)}"
                )
            )
        return ()
    roles = decode_texts(role_values)
    if not roles or len(roles) != len(contents):
        raise RequestError(
            contract.invalid_parameter_message(
                contract.INPUT_CHAT_ROLES,
                f"needs one role for each of the {len(contents)} messages, got {len(roles)}",
            )
        )
    unknown = sorted({r for r in roles if r not in contract.CHAT_ROLES})
    if unknown:
        raise RequestError(
            contract.invalid_parameter_message(
                contract.INPUT_CHAT_ROLES,
                f"has unknown roles {unknown}; expected {list(contract.CHAT_ROLES)}",
            )
        )
    return tuple(zip(roles, contents, strict=True))


def _scalar(get: Get, name: str, default: Any) -> Any:
    values = get(name)
    if values is None:
        return default
    flat = np.asarray(values).reshape(-1)
    if flat.size != 1:
        raise RequestError(
            contract.invalid_parameter_message(name, f"needs one value, got {flat.size}")
        )
    return flat[0].item()


def read_request(get: Get, *, max_new_tokens: int, default_max_new_tokens: int) -> GenerateRequest:
    """The request's prompt, sampling parameters and prompt options; :class:`RequestError`
    names the first input out of range."""
    prompt_values = get(contract.INPUT_PROMPT)
    prompts = [] if prompt_values is None else decode_texts(prompt_values)
    messages = _conversation(get, prompts)
    stop_values = get(contract.INPUT_STOP)
    stops = () if stop_values is None else tuple(decode_texts(stop_values))
    seed = _scalar(get, contract.INPUT_SEED, None)
    params = SamplingParams(
        max_new_tokens=int(_scalar(get, contract.INPUT_MAX_NEW_TOKENS, 0))
        or default_max_new_tokens,
        temperature=float(_scalar(get, contract.INPUT_TEMPERATURE, 0.0)),
        top_p=float(_scalar(get, contract.INPUT_TOP_P, 0.0)),
        top_k=int(_scalar(get, contract.INPUT_TOP_K, 0)),
        repetition_penalty=float(_scalar(get, contract.INPUT_REPETITION_PENALTY, 0.0)),
        seed=None if seed is None else int(seed),
        stop=stops,
    )
    problems = parameter_problems(params, max_new_tokens)
    if problems:
        name, why = next(iter(problems.items()))
        raise RequestError(contract.invalid_parameter_message(name, why))
    return GenerateRequest(
        prompt="" if messages else prompts[0],
        params=params,
        use_chat_template=bool(messages)
        or bool(_scalar(get, contract.INPUT_USE_CHAT_TEMPLATE, False)),
        truncate=bool(_scalar(get, contract.INPUT_TRUNCATE, True)),
        messages=messages,
    )


def prompt_ids(request: GenerateRequest, encoder: Any, max_length: int) -> list[int]:
    """The token ids a request asks to continue, by ``encoder`` (a
    :class:`~triton_models.runtime.prompts.PromptEncoder`); a prompt the model cannot take is a
    :class:`RequestError` naming the input."""
    from .prompts import PromptError
    from .text import InputTooLongError

    try:
        ids: list[int] = encoder.encode(
            request.prompt,
            use_chat_template=request.use_chat_template,
            max_length=max_length,
            truncate=request.truncate,
            messages=request.messages,
        )
    except InputTooLongError as exc:
        raise RequestError(str(exc)) from None
    except PromptError as exc:
        raise RequestError(contract.invalid_parameter_message(exc.name, str(exc))) from None
    return ids


@dataclass(frozen=True)
class GenerateModelArgs:
    """What every generate model reads from Triton's ``initialize`` arguments."""

    params: dict[str, str]  # the config's string parameters
    folder: Path  # the HF folder
    max_length: int
    max_new_tokens: int
    default_max_new_tokens: int

    @classmethod
    def read(cls, pb_utils: Any, args: dict[str, str]) -> GenerateModelArgs:
        """The model's settings; a model that is not decoupled is refused."""
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                f"{config['name']} must be decoupled (model_transaction_policy {{ decoupled: true }})"
            )
        params = string_parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        return cls(
            params=params,
            folder=version_dir / params.get(contract.PARAM_MODEL_DIR, contract.GENERATE_MODEL_DIR),
            max_length=int(params[contract.PARAM_MAX_LENGTH]),
            max_new_tokens=int(params[contract.PARAM_MAX_NEW_TOKENS]),
            default_max_new_tokens=int(params[contract.PARAM_DEFAULT_MAX_NEW_TOKENS]),
        )

    def prompt(
        self, pb_utils: Any, request: Any, encoder: Any
    ) -> tuple[GenerateRequest, list[int]]:
        """A Triton request read and checked, and the token ids it asks to continue (by
        ``encoder``); :class:`~.generate_request.RequestError` names what is wrong."""

        def get(name: str) -> Any:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        asked = read_request(
            get,
            max_new_tokens=self.max_new_tokens,
            default_max_new_tokens=self.default_max_new_tokens,
        )
        return asked, prompt_ids(asked, encoder, self.max_length)
