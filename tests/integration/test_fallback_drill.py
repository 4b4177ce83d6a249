"""``lmforge bench fallback`` in small: two real tritonservers behind one gateway route split
50/50 with fallback on; one server's process group is SIGKILLed under closed-loop Embed load.

No call that had a live alternative (the other server was up) may fail, both deployments must
have answered before the kill, only the survivor after it, and nothing of either server may be
left behind. The drill starts and kills its own servers (and only reads the repository).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks.fallback import register_fallback

pytestmark = pytest.mark.integration


def test_killing_one_triton_under_load_loses_no_request_with_a_live_alternative(
    demo_repository: Path, tmp_path: Path
) -> None:
    parser = argparse.ArgumentParser()
    register_fallback(parser.add_subparsers())
    args = parser.parse_args(
        [
            "fallback",
            "--repository",
            str(demo_repository),
            "--concurrency",
            "8",
            "--warmup",
            "1",
            "--before",
            "3",
            "--after",
            "4",
            "--out",
            str(tmp_path),
        ]
    )
    code = args.handler(args)
    report = json.loads((tmp_path / "fallback.json").read_text(encoding="utf-8"))
    assert (tmp_path / "fallback.md").read_text(encoding="utf-8").count("Must-show HELD") == 1

    requests = report["requests"]
    assert requests["failed_with_live_alternative"] == 0, report["failures"]
    assert report["must_show"]["held"] and code == 0
    assert requests["after_kill"]["ok"] > 0 and requests["before_kill"]["ok"] > 0
    assert requests["ok"] == requests["total"] - sum(requests["failed"].values())

    before, after = report["served_by"]["before_kill"], report["served_by"]["after_kill"]
    assert before["a"] > 0 and before["b"] > 0, before
    assert after["b"] > 0, after
    assert report["killed"] == "a" and report["killed_processes"] >= 1
    assert report["survivor_alive_at_end"]
    assert report["breaker"]["opened_after_kill_s"] is not None, report["breaker"]
    assert report["health"]["after_load"] == "SERVING"
    for name, left in report["left_behind"].items():
        assert left == {"processes": 0, "shm_regions": 0}, name
