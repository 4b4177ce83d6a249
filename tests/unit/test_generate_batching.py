"""The in-flight decode loop on tiny random causal LMs (Llama and GPT-2 shapes): sequences that
join and leave a running batch get exactly the tokens they would get alone."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence as Ids
from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from triton_models.runtime import contract
from triton_models.runtime.batch_decoder import BatchDecoder, CapacityError, Job, Limits
from triton_models.runtime.kv_batch import prefill_inputs
from triton_models.runtime.sampling import SamplingParams
from triton_models.runtime.sequence import Sequence, Step

PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20], [30, 31, 32, 33]]


def tiny(kind: str) -> Any:
    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=1,
            eos_token_id=2,
        )
        return LlamaForCausalLM(config).eval()
    config = GPT2Config(
        vocab_size=97,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=2,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(params=["llama", "gpt2"], scope="module")
def model(request: pytest.FixtureRequest) -> Any:
    return tiny(request.param)


class Sink:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.gone = False
        self.abandoned = False
        self.failed: str | None = None

    def send(self, step: Step) -> None:
        self.steps.append(step)

    def cancelled(self) -> bool:
        return self.gone

    def abandon(self) -> None:
        self.abandoned = True

    def fail(self, message: str) -> None:
        self.failed = message


def text(ids: Ids[int]) -> str:
    return " ".join(str(i) for i in ids)


def seq(prompt: Ids[int], **params: Any) -> Sequence:
    params.setdefault("max_new_tokens", 12)
    return Sequence("r", tuple(prompt), SamplingParams(**params), text, frozenset())


def greedy_alone(model: Any, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
    return [int(t) for t in out[0, len(prompt) :]]


def test_sequences_joining_a_running_batch_decode_as_if_alone(model: Any) -> None:
    decoder = BatchDecoder(model, Limits(8, 1000))
    sequences = []
    for prompt in PROMPTS:  # each joins two steps after the previous one
        sequences.append(seq(prompt))
        decoder.submit(Job(sequences[-1], Sink()))
        decoder.run_once()
        decoder.run_once()
    decoder.run_until_idle()
    for prompt, sequence in zip(PROMPTS, sequences, strict=True):
        assert sequence.generated == greedy_alone(model, prompt, 12)
        assert sequence.finish_reason == contract.FINISH_LENGTH
    assert decoder.reserved_kv_tokens == 0 and decoder.running == 0


def test_sequences_leaving_early_do_not_disturb_the_others(model: Any) -> None:
    decoder = BatchDecoder(model, Limits(8, 1000))
    lengths = [3, 12, 5, 9]
    sequences = [seq(p, max_new_tokens=n) for p, n in zip(PROMPTS, lengths, strict=True)]
    for sequence in sequences:
        decoder.submit(Job(sequence, Sink()))
    stats = decoder.run_once()  # prefill (first tokens), then one decode step
    assert stats.running == 4 and stats.generated == 8
    decoder.run_until_idle()
    for prompt, n, sequence in zip(PROMPTS, lengths, sequences, strict=True):
        assert sequence.generated == greedy_alone(model, prompt, n)


def test_the_same_seed_samples_the_same_tokens_alone_and_in_a_batch(model: Any) -> None:
    params = {"temperature": 0.8, "top_p": 0.9, "seed": 42, "max_new_tokens": 10}
    alone = seq(PROMPTS[1], **params)
    decoder = BatchDecoder(model, Limits(8, 1000))
    decoder.submit(Job(alone, Sink()))
    decoder.run_until_idle()
    together = seq(PROMPTS[1], **params)
    for prompt in PROMPTS:
        decoder.submit(Job(seq(prompt, temperature=1.0), Sink()))
    decoder.submit(Job(together, Sink()))
    decoder.run_until_idle()
    assert together.generated == alone.generated


def test_admission_refuses_at_once_beyond_sequences_or_kv_tokens(model: Any) -> None:
    decoder = BatchDecoder(model, Limits(max_sequences=2, max_kv_tokens=40))
    decoder.submit(Job(seq(PROMPTS[0], max_new_tokens=10), Sink()))  # reserves 13
    with pytest.raises(CapacityError, match=contract.GENERATE_CAPACITY):
        decoder.submit(Job(seq(PROMPTS[1], max_new_tokens=30), Sink()))  # 37 more: > 40
    decoder.submit(Job(seq(PROMPTS[2], max_new_tokens=10), Sink()))
    with pytest.raises(CapacityError, match="sequences"):
        decoder.submit(Job(seq(PROMPTS[3]), Sink()))
    decoder.run_until_idle()
    assert decoder.reserved_kv_tokens == 0
    decoder.submit(Job(seq(PROMPTS[3]), Sink()))  # room again once they finished


def test_a_cancelled_sequence_leaves_the_batch_and_frees_its_reservation(model: Any) -> None:
    decoder = BatchDecoder(model, Limits(8, 1000), cancel_check_s=0.0)
    keep, cancel = Sink(), Sink()
    kept = seq(PROMPTS[0], max_new_tokens=20)
    decoder.submit(Job(kept, keep))
    decoder.submit(Job(seq(PROMPTS[1], max_new_tokens=20), cancel))
    decoder.run_once()
    cancel.gone = True
    stats = decoder.run_once()
    assert stats.running == 1 and cancel.abandoned
    assert decoder.reserved_kv_tokens == kept.reserved
    decoder.run_until_idle()
    assert kept.generated == greedy_alone(model, PROMPTS[0], 20)


def test_steps_stream_text_and_the_last_one_carries_the_finish(model: Any) -> None:
    decoder = BatchDecoder(model, Limits(8, 1000))
    sink = Sink()
    decoder.submit(Job(seq(PROMPTS[0], max_new_tokens=5), sink))
    decoder.run_until_idle()
    assert [s.finished for s in sink.steps] == [False] * 4 + [True]
    assert sink.steps[-1].output_tokens == 5
    assert "".join(s.text for s in sink.steps).split() == [
        str(t) for t in greedy_alone(model, PROMPTS[0], 5)
    ]


def test_the_thread_serves_submissions_and_stop_cancels_what_is_left(model: Any) -> None:
    decoder = BatchDecoder(model, Limits(8, 10_000))
    decoder.start()
    try:
        quick = Sink()
        decoder.submit(Job(seq(PROMPTS[0], max_new_tokens=3), quick))
        deadline = time.monotonic() + 10
        while not (quick.steps and quick.steps[-1].finished) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert quick.steps[-1].finish_reason == contract.FINISH_LENGTH
        slow = Sink()
        decoder.submit(Job(seq(PROMPTS[1], max_new_tokens=5000), slow))
    finally:
        decoder.stop()
    assert slow.steps[-1].finish_reason == contract.FINISH_CANCELLED
    assert not any(t.name == "lmforge-decode" for t in threading.enumerate())


def test_a_failing_step_fails_its_sequences_and_the_loop_goes_on(model: Any) -> None:
    class Broken:
        forward = model.forward

        def __call__(self, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

    decoder = BatchDecoder(Broken(), Limits(8, 1000))
    sink = Sink()
    decoder.submit(Job(seq(PROMPTS[0]), sink))
    decoder.start()
    try:
        deadline = time.monotonic() + 10
        while sink.failed is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        decoder.stop()
    assert sink.failed is not None and decoder.reserved_kv_tokens == 0


def test_left_padded_prefill_positions_start_at_zero_for_every_row() -> None:
    ids, mask, positions = prefill_inputs([[4, 5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[4, 5, 6], [0, 0, 7]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_cancellation_is_polled_at_most_every_interval(model: Any) -> None:
    class Counting(Sink):
        polls = 0

        def cancelled(self) -> bool:
            Counting.polls += 1
            return False

    decoder = BatchDecoder(model, Limits(8, 1000), cancel_check_s=3600.0)
    decoder.submit(Job(seq(PROMPTS[0], max_new_tokens=10), Counting()))
    decoder.run_until_idle()
    assert Counting.polls == 1  # the first step only


def test_the_responder_delivers_in_order_past_a_failing_delivery() -> None:
    from triton_models.runtime.responder import Responder

    delivered: list[int] = []
    responder = Responder()

    def fail() -> None:
        raise RuntimeError("broken stream")

    for i in range(50):
        responder.submit(functools.partial(delivered.append, i))
        if i == 10:
            responder.submit(fail)
    responder.close()
    assert delivered == list(range(50))
