"""Choosing tokens: greedy, temperature, top-k, top-p, repetition penalty and seeds."""

from __future__ import annotations

import math

import pytest
import torch

from triton_models.runtime import contract
from triton_models.runtime.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    make_generator,
    next_token,
    parameter_problems,
)

NONE = torch.tensor([], dtype=torch.long)


def sample(logits: torch.Tensor, params: SamplingParams, draws: int = 200) -> list[int]:
    generator = make_generator(params.seed)
    return [next_token(logits, params, generator, NONE) for _ in range(draws)]


def test_greedy_picks_the_largest_logit_whatever_the_seed() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    for seed in (None, 0, 7):
        assert set(sample(logits, SamplingParams(max_new_tokens=1, seed=seed), 20)) == {1}


def test_temperature_sampling_reaches_other_tokens_and_a_low_temperature_does_not() -> None:
    logits = torch.tensor([1.0, 1.2, 0.9])
    hot = sample(logits, SamplingParams(max_new_tokens=1, temperature=1.0, seed=3))
    assert set(hot) == {0, 1, 2}
    cold = sample(logits, SamplingParams(max_new_tokens=1, temperature=0.01, seed=3))
    assert set(cold) == {1}


def test_top_k_keeps_only_the_k_largest() -> None:
    logits = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    filtered = filter_top_k(logits, 2)
    assert torch.isinf(filtered[2:]).all() and torch.equal(filtered[:2], logits[:2])
    drawn = sample(logits, SamplingParams(max_new_tokens=1, temperature=5.0, top_k=2, seed=1))
    assert set(drawn) == {0, 1}


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.log(torch.tensor([0.1, 0.5, 0.15, 0.25]))
    kept = ~torch.isinf(filter_top_p(logits, 0.7))
    assert kept.tolist() == [False, True, False, True]  # 0.5 + 0.25 >= 0.7
    assert (~torch.isinf(filter_top_p(logits, 0.01))).tolist() == [False, True, False, False]
    assert torch.equal(filter_top_p(logits, 1.0), logits)
    drawn = sample(logits, SamplingParams(max_new_tokens=1, temperature=1.0, top_p=0.7, seed=2))
    assert set(drawn) == {1, 3}


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = torch.tensor([2.0, 1.5, -1.0, 0.5])
    penalized = apply_repetition_penalty(logits, torch.tensor([0, 2, 0]), 2.0)
    assert penalized.tolist() == [1.0, 1.5, -2.0, 0.5]
    assert logits.tolist() == [2.0, 1.5, -1.0, 0.5]  # a copy
    params = SamplingParams(max_new_tokens=1, repetition_penalty=2.0)
    assert next_token(logits, params, make_generator(0), torch.tensor([0])) == 1
    assert next_token(logits, params, make_generator(0), NONE) == 0


def test_same_seed_same_tokens_and_other_seeds_differ() -> None:
    logits = torch.zeros(1000)
    params = SamplingParams(max_new_tokens=1, temperature=1.0, seed=1234)
    assert sample(logits, params, 30) == sample(logits, params, 30)
    other = SamplingParams(max_new_tokens=1, temperature=1.0, seed=1235)
    assert sample(logits, params, 30) != sample(logits, other, 30)


def test_generators_of_different_requests_do_not_share_state() -> None:
    logits = torch.zeros(1000)
    params = SamplingParams(max_new_tokens=1, temperature=1.0, seed=99)
    alone = sample(logits, params, 10)
    mine, other = make_generator(99), make_generator(5)
    interleaved = []
    for _ in range(10):
        interleaved.append(next_token(logits, params, mine, NONE))
        next_token(logits, params, other, NONE)  # another request sampling in between
    assert interleaved == alone


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"max_new_tokens": 0}, contract.INPUT_MAX_NEW_TOKENS),
        ({"max_new_tokens": 65}, contract.INPUT_MAX_NEW_TOKENS),
        ({"temperature": -0.5}, contract.INPUT_TEMPERATURE),
        ({"temperature": math.nan}, contract.INPUT_TEMPERATURE),
        ({"top_p": 1.5}, contract.INPUT_TOP_P),
        ({"top_k": -1}, contract.INPUT_TOP_K),
        ({"repetition_penalty": -1.0}, contract.INPUT_REPETITION_PENALTY),
        ({"stop": ("ok", "")}, contract.INPUT_STOP),
    ],
)
def test_parameter_problems_name_the_input(change: dict[str, object], name: str) -> None:
    base = {"max_new_tokens": 8}
    params = SamplingParams(**(base | change))  # type: ignore[arg-type]
    assert list(parameter_problems(params, 64)) == [name]
    assert parameter_problems(SamplingParams(max_new_tokens=8, stop=("x",)), 64) == {}
