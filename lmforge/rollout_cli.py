"""``lmforge rollout PLAN.yaml`` (and ``--rollback``, ``--demo``): the command around
:class:`~rollout.engine.Rollout`. Exit code 0: promoted; 1: rolled back; 2: not
started (or the rollback could not finish)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from benchmarks import RESULTS
from benchmarks.rollout_demo import run_demo
from rollout.engine import Rollout
from rollout.errors import RolloutError
from rollout.plan import RolloutPlan, load_plan
from rollout.report import RolloutReport
from rollout.state import RolloutState, pid_alive

logger = logging.getLogger(__name__)
#: where ``--demo`` writes rollout.json and rollout.md unless told otherwise


def rollback_from_state(
    plan: RolloutPlan, wait_s: float = 600.0, rollout: Rollout | None = None
) -> str:
    """``lmforge rollout --rollback``: interrupt the running rollout of ``plan`` (it rolls
    itself back), or undo what a dead one left behind (with ``rollout``, when given)."""
    path = plan.state_path
    if not path.exists():
        return f"no rollout of {plan.route!r} in progress ({path} does not exist)"
    state = RolloutState.load(path)
    if state.pid != os.getpid() and pid_alive(state.pid):
        os.kill(state.pid, signal.SIGINT)
        deadline = time.monotonic() + wait_s
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if path.exists():
            raise RolloutError(f"the rollout (pid {state.pid}) did not roll back in {wait_s:g} s")
        return f"the rollout (pid {state.pid}) rolled back"
    if state.phase == "promoting":
        raise RolloutError(
            f"the rollout was promoting version {state.new_version}; finish it instead "
            f"(state in {path})"
        )
    rollout = rollout or Rollout(plan)
    rollout.state = state
    try:
        rollout.rollback("requested (lmforge rollout --rollback)")
    finally:
        rollout.close()
    return f"rolled back version {state.new_version} of {state.route!r}"


def _print_report(report: RolloutReport) -> None:
    for stage in report.stages:
        share = stage.traffic.get("share_new")
        print(
            f"{stage.label:>14}: {stage.verdict:<4} new share "
            f"{'-' if share is None else f'{share:.1%}'}, failures "
            f"{stage.traffic.get('failures_new', 0):g}/{stage.traffic.get('attempts_new', 0):g}"
            + (f"  ({stage.reason})" if stage.reason else "")
        )
    print(f"{report.outcome}" + (f": {report.reason}" if report.reason else ""))


def _rollout(args: argparse.Namespace) -> int:
    if args.demo:
        out = Path(args.out) if args.out else RESULTS
        results = run_demo(
            out,
            repository=Path(args.repository) if args.repository else None,
            dwell_s=args.dwell,
            concurrency=args.concurrency,
        )
        for name, scenario in results["scenarios"].items():
            total = scenario["client_total"]
            print(f"{name}: {scenario['outcome']}; client failures {total['failed'] or 0}")
        print(f"results in {out}")
        return 0
    if not args.plan:
        print("lmforge rollout: give a PLAN (or --demo)")
        return 2
    try:
        plan = load_plan(Path(args.plan))
        if args.rollback:
            print(rollback_from_state(plan))
            return 0
    except RolloutError as exc:
        logger.error("%s", exc)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.warning("%s: rolling back", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = Rollout(plan, stop=stop, on_event=lambda text: print(text, flush=True)).run()
    except RolloutError as exc:
        logger.error("%s", exc)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _print_report(report)
    if args.report:
        Path(args.report).write_text(
            json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8"
        )
    return 0 if report.outcome == "promoted" else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rollout",
        help="roll a new model version out through the gateway's split, checked, with rollback",
        description="Load a new version of a model into Triton (explicit model control), warm "
        "it, shift the gateway's traffic to it in stages while checking its error rate, the "
        "route's latency and shadow agreement, and roll back on a failed check, on SIGINT or "
        "on --rollback. Exit code 0: promoted; 1: rolled back; 2: not started.",
    )
    parser.add_argument("plan", nargs="?", help="rollout plan (YAML)")
    parser.add_argument(
        "--rollback", action="store_true", help="roll back the rollout of PLAN in progress"
    )
    parser.add_argument("--report", default=None, help="write the rollout report (JSON) here")
    demo = parser.add_argument_group("demo")
    demo.add_argument(
        "--demo",
        action="store_true",
        help="embedded Triton + gateway under load: a good, a broken and a shadowed broken "
        "version; writes rollout.json and rollout.md",
    )
    demo.add_argument("--out", default=None, help="default: benchmarks/results")
    demo.add_argument(
        "--repository", default=None, help="a built repository with minilm (default: build)"
    )
    demo.add_argument("--dwell", type=float, default=8.0, help="seconds per stage")
    demo.add_argument("--concurrency", type=int, default=4, help="closed-loop clients")
    parser.set_defaults(handler=_rollout)
