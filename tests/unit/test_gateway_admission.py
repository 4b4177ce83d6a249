"""Queue-time admission: learn the cost per input from batches, refuse what would wait too long."""

from __future__ import annotations

import pytest
from lmforge_client.status import retry_delay

from gateway.admission import QueueState, QueueTimeAdmission
from gateway.errors import Overloaded, to_status_proto


def state(queued: int, in_flight: int = 1, slots: int = 1) -> QueueState:
    return QueueState(
        queued_inputs=queued, in_flight_batches=in_flight, max_batch_size=16,
        max_in_flight_batches=slots,
    )  # fmt: skip


def test_everything_is_admitted_before_the_first_batch_is_measured() -> None:
    admission = QueueTimeAdmission(0.05)
    admission.check("m", state(10_000))
    assert admission.expected_wait(state(10_000)) == 0.0


def test_expected_wait_is_the_queue_at_the_learnt_cost_plus_half_a_running_batch() -> None:
    admission = QueueTimeAdmission(0.05)
    admission.observe(16, 0.080)  # 5 ms an input
    assert admission.expected_wait(state(0, in_flight=0)) == 0.0
    assert admission.expected_wait(state(0)) == pytest.approx(0.040)
    assert admission.expected_wait(state(32)) == pytest.approx(0.040 + 0.160)
    assert admission.expected_wait(state(32, in_flight=1, slots=2)) == pytest.approx(0.080)


def test_over_budget_is_overloaded_with_the_excess_as_retry_info() -> None:
    admission = QueueTimeAdmission(0.100)
    admission.observe(16, 0.080)
    admission.check("m", state(8))  # 40 + 40 ms: admitted
    with pytest.raises(Overloaded, match="max_queue_ms=100") as info:
        admission.check("m", state(32))  # 40 + 160 ms
    assert info.value.retry_after == pytest.approx(0.100)
    assert retry_delay(to_status_proto(info.value)) == pytest.approx(0.100)


def test_the_cost_follows_the_backend_and_ignores_failed_batches() -> None:
    admission = QueueTimeAdmission(0.05, alpha=0.5)
    admission.observe(10, 0.010)
    admission.observe(10, 0.030)  # slower now: the mean moves half way
    admission.observe(10, 5.0, ok=False)
    assert admission.seconds_per_input == pytest.approx(0.002)
    with pytest.raises(ValueError):
        QueueTimeAdmission(0)


def test_a_count_bound_sized_from_the_budget_and_throughput_never_drops_below_one_request() -> None:
    from gateway.admission import max_queued_for

    assert max_queued_for(0.05, 400.0) == 20
    assert max_queued_for(0.001, 400.0, floor=8) == 8


def test_by_default_the_budget_is_four_full_batches_at_the_measured_cost_per_input() -> None:
    admission = QueueTimeAdmission()  # no max_queue_ms: on, derived
    assert admission.budget(16) is None
    admission.check("m", state(10_000))  # nothing measured yet: admitted
    admission.observe(16, 0.080)  # 5 ms an input; the queue's batches hold 16
    admission.check("m", state(63))  # 40 + 3 x 80 ms: three whole batches ahead
    assert admission.budget(16) == pytest.approx(4 * 0.080)  # 4 x 16 inputs x 5 ms
    with pytest.raises(Overloaded, match="4x the measured time of a full batch") as info:
        admission.check("m", state(64))  # 40 + 4 x 80 ms
    assert info.value.retry_after == pytest.approx(0.040)


def test_the_derived_budget_follows_the_cost_per_input_not_the_size_batches_grow_to() -> None:
    admission = QueueTimeAdmission()
    admission.observe(4, 0.020)  # small batches at low load: 5 ms an input
    admission.check("m", state(0))
    assert admission.budget(16) == pytest.approx(4 * 0.080)
    admission.observe(16, 0.080)  # full batches under load, same cost per input
    assert admission.budget(16) == pytest.approx(4 * 0.080)  # the budget does not grow with them
    admission.observe(16, 0.160)  # the backend slowed down: the budget follows
    assert admission.budget(16) == pytest.approx(4 * 16 * (0.005 + 0.2 * 0.005))


def test_an_explicit_budget_overrides_the_derived_one_and_the_count_bound_holds() -> None:
    admission = QueueTimeAdmission(10.0)
    admission.observe(16, 0.080)
    assert admission.budget(16) == 10.0
    admission.admit("m", 4, state(60), max_queued_inputs=64)
    with pytest.raises(Overloaded, match="max_queued_inputs=64"):
        admission.admit("m", 5, state(60), max_queued_inputs=64)
