"""What the vLLM generate model asks of vLLM and makes of its answers (no vLLM needed), and
the request reader both generate engines share."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from triton_models.runtime import contract
from triton_models.runtime.generate_request import RequestError, read_request
from triton_models.runtime.prompts import PromptEncoder
from triton_models.runtime.sampling import SamplingParams
from triton_models.runtime.vllm_engine import Admission, finish, sampling_arguments


def test_our_off_values_become_vllms_neutral_ones() -> None:
    args = sampling_arguments(SamplingParams(max_new_tokens=7), frozenset({2, 0}))
    assert args["temperature"] == 0.0 and args["max_tokens"] == 7
    assert (args["top_p"], args["top_k"], args["repetition_penalty"]) == (1.0, -1, 1.0)
    assert args["stop_token_ids"] == [0, 2] and args["seed"] is None
    assert args["include_stop_str_in_output"] is False and args["skip_special_tokens"] is True


def test_sampling_knobs_pass_through() -> None:
    params = SamplingParams(
        max_new_tokens=3,
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        repetition_penalty=1.3,
        seed=11,
        stop=("\n\n", "END"),
    )
    args = sampling_arguments(params, frozenset())
    assert (args["temperature"], args["top_p"], args["top_k"]) == (0.7, 0.9, 40)
    assert (args["repetition_penalty"], args["seed"], args["stop"]) == (1.3, 11, ["\n\n", "END"])


@pytest.mark.parametrize(
    ("reason", "stop_reason", "expected"),
    [
        ("length", None, (contract.FINISH_LENGTH, "")),
        ("stop", "END", (contract.FINISH_STOP_SEQUENCE, "END")),
        ("stop", 2, (contract.FINISH_END_OF_SEQUENCE, "")),
        ("stop", None, (contract.FINISH_END_OF_SEQUENCE, "")),
        ("abort", None, (contract.FINISH_CANCELLED, "")),
    ],
)
def test_vllms_finish_reasons_map_to_the_contracts(
    reason: str, stop_reason: Any, expected: tuple[str, str]
) -> None:
    assert finish(reason, stop_reason) == expected


def test_admission_holds_running_plus_waiting_and_refuses_beyond() -> None:
    admission = Admission(running=2, waiting=1)
    assert [admission.try_enter() for _ in range(4)] == [True, True, True, False]
    assert contract.GENERATE_CAPACITY in admission.refusal()
    admission.leave()
    assert admission.try_enter() and admission.held == 3


def test_admission_is_exact_under_threads() -> None:
    admission = Admission(running=8, waiting=8)
    entered: list[bool] = []
    threads = [
        threading.Thread(target=lambda: entered.append(admission.try_enter())) for _ in range(64)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(entered) == 16


def _get(**inputs: Any) -> Any:
    def get(name: str) -> Any:
        return inputs.get(name)

    return get


def _text(*values: str) -> np.ndarray[Any, Any]:
    return np.array([v.encode() for v in values], dtype=np.object_)


def test_a_request_is_read_with_the_models_defaults() -> None:
    asked = read_request(
        _get(PROMPT=_text("hi"), STOP=_text("\n")), max_new_tokens=64, default_max_new_tokens=16
    )
    assert asked.prompt == "hi" and asked.params.max_new_tokens == 16
    assert asked.params.stop == ("\n",) and asked.truncate and not asked.use_chat_template


@pytest.mark.parametrize(
    ("inputs", "name"),
    [
        ({"PROMPT": _text("a", "b")}, contract.INPUT_PROMPT),
        ({"PROMPT": _text("a"), "MAX_NEW_TOKENS": np.array([65], np.int32)}, "MAX_NEW_TOKENS"),
        ({"PROMPT": _text("a"), "TOP_P": np.array([1.5], np.float32)}, "TOP_P"),
        ({"PROMPT": _text("a"), "SEED": np.array([1, 2], np.uint64)}, "SEED"),
    ],
)
def test_a_bad_request_names_its_input(inputs: dict[str, Any], name: str) -> None:
    with pytest.raises(RequestError) as info:
        read_request(_get(**inputs), max_new_tokens=64, default_max_new_tokens=16)
    assert contract.invalid_parameter(str(info.value)) is not None
    assert contract.invalid_parameter(str(info.value))[0] == name  # type: ignore[index]


def test_a_conversation_is_read_as_role_and_content_pairs() -> None:
    asked = read_request(
        _get(PROMPT=_text("be brief", "Hi"), CHAT_ROLES=_text("system", "user")),
        max_new_tokens=64,
        default_max_new_tokens=16,
    )
    assert asked.messages == (("system", "be brief"), ("user", "Hi"))
    assert asked.prompt == "" and asked.use_chat_template


@pytest.mark.parametrize(
    "roles", [("user",), ("user", "user", "user"), ("user", "narrator")], ids=str
)
def test_roles_must_pair_with_the_messages_and_be_known(roles: tuple[str, ...]) -> None:
    with pytest.raises(RequestError) as info:
        read_request(
            _get(PROMPT=_text("a", "b"), CHAT_ROLES=_text(*roles)),
            max_new_tokens=64,
            default_max_new_tokens=16,
        )
    assert contract.invalid_parameter(str(info.value))[0] == contract.INPUT_CHAT_ROLES  # type: ignore[index]


class _ChatTokenizer:
    """Characters as token ids and a template that tags each turn, enough to see the turns."""

    chat_template = "tags"

    def apply_chat_template(
        self, turns: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool
    ) -> str:
        if turns[0]["role"] == "assistant":
            raise ValueError("conversations start with a system or user turn")
        text = "".join(f"<{t['role']}>{t['content']}" for t in turns)
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [ord(ch) for ch in text]}


def test_the_chat_template_renders_every_turn_and_its_refusal_names_the_roles() -> None:
    from triton_models.runtime.generate_request import prompt_ids

    encoder = PromptEncoder(_ChatTokenizer(), frozenset(), 0)
    asked = read_request(
        _get(PROMPT=_text("be brief", "Hi"), CHAT_ROLES=_text("system", "user")),
        max_new_tokens=64,
        default_max_new_tokens=16,
    )
    ids = prompt_ids(asked, encoder, max_length=100)
    assert "".join(map(chr, ids)) == "<system>be brief<user>Hi<assistant>"
    wrong = read_request(
        _get(PROMPT=_text("Hello"), CHAT_ROLES=_text("assistant")),
        max_new_tokens=64,
        default_max_new_tokens=16,
    )
    with pytest.raises(RequestError) as info:
        prompt_ids(wrong, encoder, max_length=100)
    assert contract.invalid_parameter(str(info.value))[0] == contract.INPUT_CHAT_ROLES  # type: ignore[index]
    assert "start with a system or user turn" in str(info.value)
