"""``lmforge rollout`` end to end: a real tritonserver in explicit model-control mode on a
``minilm``-only repository built from the packaged weights, a real gateway process, and four
closed-loop Embed clients the whole time (:func:`benchmarks.rollout_demo.run_demo`):

* ``good``: version 2 (the same weights) is loaded next to version 1, warmed, given 1% →
  10% → 50% → 100% of the traffic and promoted; no client request fails and every reply
  names the version that served it, so the share per stage is what clients saw;
* ``bad-canary``: version 3 fails every request after its warm-up; the 1% canary's error
  check rolls it back. Its failures are ``INTERNAL`` (a model that raises), which the
  gateway does not hand to the fallback deployment: the clients' failures are counted, not
  hidden, and must stay within the canary's window (until its traffic was back on the old
  version);
* ``bad-shadow``: the same version behind a shadow stage first: rolled back with no client
  failure at all.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

DWELL_S = 4.0


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    from benchmarks.rollout_demo import run_demo

    began = time.monotonic()
    results = run_demo(None, dwell_s=DWELL_S, concurrency=4)
    results["settings"]["test_seconds"] = round(time.monotonic() - began, 1)
    print("rollout demo:", results["settings"])
    return results


def _stages(scenario: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["window"]: row for row in scenario["client_stages"]}


def test_a_good_version_rolls_out_stage_by_stage_without_a_failed_request(
    demo: dict[str, Any],
) -> None:
    good = demo["scenarios"]["good"]
    assert good["outcome"] == "promoted", good["reason"]
    total = good["client_total"]
    assert total["failed"] == {} and total["requests"] > 200, total
    stages = _stages(good)
    before = next(iter(stages.values()))
    after = list(stages.values())[-1]
    assert set(before["by_version"]) == {"1"}, before  # version 2 answers nobody before
    assert set(after["by_version"]) <= {"2"} and after["requests"] > 0, after
    shares = [stages[label]["share_new"] for label in ("canary 1%", "canary 10%", "canary 50%")]
    assert shares[0] < 0.1 and shares[1] < 0.3 and 0.25 < shares[2] < 0.75, shares
    assert stages["canary 100%"]["share_new"] > 0.95, stages["canary 100%"]
    assert stages["baseline 0%"]["share_new"] == 0.0
    report = good["rollout"]
    assert [s["verdict"] for s in report["stages"]] == ["pass"] * 5
    assert all(s["traffic"]["failures_new"] == 0 for s in report["stages"])


def test_a_version_that_breaks_under_traffic_is_rolled_back_on_its_canary(
    demo: dict[str, Any],
) -> None:
    bad = demo["scenarios"]["bad-canary"]
    report = bad["rollout"]
    assert bad["outcome"] == "rolled_back" and report["failed_stage"] == "canary 1%", bad["reason"]
    assert "error_rate" in bad["reason"] and report["warmup"]["failed"] == 0
    stages = _stages(bad)
    canary = stages["canary 1%"]
    failed_elsewhere = {
        label: row["failed"]
        for label, row in stages.items()
        if label != "canary 1%" and row["failed"]
    }
    # what the clients saw is reported, not hidden: INTERNAL, only while the canary ran
    assert failed_elsewhere == {}, failed_elsewhere
    assert set(canary["failed"]) <= {"INTERNAL"}, canary
    assert sum(canary["failed"].values()) <= max(3, 0.05 * canary["requests"]), canary
    after = list(stages.values())[-1]
    assert set(after["by_version"]) == {"2"}, after  # back on the promoted version 2
    assert report["timings_s"]["traffic_back"] < 5


def test_a_shadow_stage_catches_the_broken_version_before_any_client_sees_it(
    demo: dict[str, Any],
) -> None:
    shadow = demo["scenarios"]["bad-shadow"]
    assert shadow["outcome"] == "rolled_back", shadow["reason"]
    assert shadow["rollout"]["failed_stage"] == "shadow 50%"
    assert shadow["client_total"]["failed"] == {}, shadow["client_total"]
    assert set(shadow["client_total"]["by_version"]) == {"2"}


def test_the_repository_keeps_the_promoted_version_and_nothing_is_left_running(
    demo: dict[str, Any],
) -> None:
    from triton_host.launcher import group_members

    assert demo["triton_versions"] == {"minilm": [1, 2], "minilm_encoder": [1, 2]}
    assert group_members(demo["settings"]["triton_pid"]) == []
