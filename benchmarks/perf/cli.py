"""``lmforge bench perf`` (``make perf``): serve the demo models, measure them, compare the
same-run ratios with the recorded baseline, append the run to the history; exit 1 on a
regression, naming the model, the figure, the baseline, the value now and the limit."""

from __future__ import annotations

import argparse
import contextlib
import logging
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import RESULTS
from benchmarks.perf.checks import (
    PerfConfigError,
    compare,
    load_tolerances,
    regression_report,
    shape,
)
from benchmarks.perf.drill import slowed_copy
from benchmarks.perf.measure import Load, measure
from benchmarks.perf.report import (
    BASELINE_FILE,
    MARKDOWN_FILE,
    PLOT_FILE,
    append_history,
    commit,
    machine,
    markdown,
    plot,
    read_baseline,
    write_baseline,
)

logger = logging.getLogger(__name__)

DEMO_MODEL_NAMES = ("minilm", "sentiment", "smollm2")
EXIT_REGRESSION = 1
EXIT_USAGE = 2


def _repository(args: argparse.Namespace) -> Path:
    from trainer.repository.demo_serving import build_demo_repository
    from trainer.settings import settings

    path = (
        Path(args.repository).expanduser()
        if args.repository
        else settings().cache / "demo-repository"
    )
    if not args.no_build:
        build_demo_repository(path)
    return path.resolve()


@contextlib.contextmanager
def _served(repository: Path, args: argparse.Namespace) -> Iterator[Path]:
    """The repository to serve: itself, or the drill's slowed temporary copy."""
    if not args.slow_model:
        yield repository
        return
    with tempfile.TemporaryDirectory(prefix="lmforge-perf-drill-") as tmp:
        yield slowed_copy(repository, args.slow_model, args.slow_ms, Path(tmp) / "repository")


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.slow_model and args.record_baseline:
        return "--record-baseline with --slow-model would record the drill's slowness"
    if args.slow_model and args.slow_model not in args.models:
        return f"--slow-model {args.slow_model} is not among --models {args.models}"
    return None


def _note(args: argparse.Namespace, baseline_path: Path, checks: list[Any] | None) -> str:
    if args.record_baseline:
        return f"Recorded as the baseline: {baseline_path}"
    if checks is not None and all(c.passed for c in checks):
        return f"PASS: no regression against {baseline_path} ({len(checks)} checks)"
    return "FAIL\n\n" + regression_report(checks or [])


def _run(args: argparse.Namespace) -> int:
    from trainer.datasets import dataset_file, read_column

    out = Path(args.out)
    baseline_path = Path(args.baseline) if args.baseline else out / BASELINE_FILE
    try:
        problem = _usage_problem(args)
        if problem:
            raise PerfConfigError(problem)
        tolerances = load_tolerances(Path(args.tolerances) if args.tolerances else None)
        baseline = None
        if not args.record_baseline:
            if not baseline_path.is_file():
                raise PerfConfigError(
                    f"no baseline at {baseline_path}: record one with --record-baseline"
                )
            baseline = read_baseline(baseline_path)
        load = Load(args.concurrency, args.duration, args.warmup, args.new_tokens)
        repository = _repository(args)
        missing = [m for m in args.models if not (repository / m / "config.pbtxt").is_file()]
        if missing:
            raise PerfConfigError(f"{repository}: no model(s) {', '.join(missing)}")
        sentences = read_column(dataset_file("sst2", "dev"), "sentence", args.sentences)
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        host = machine()
        with (
            tempfile.TemporaryDirectory(prefix="lmforge-perf-") as tmp,
            _served(repository, args) as served,
        ):
            figures = measure(served, args.models, load, sentences, Path(tmp))
    except PerfConfigError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    except subprocess.CalledProcessError as exc:
        logger.error("building the demo repository failed (exit %s)", exc.returncode)
        return EXIT_USAGE
    record: dict[str, Any] = {
        "timestamp": started,
        **commit(),
        "machine": host,
        "repository": str(repository),
        "concurrency": load.concurrency,
        "duration_s": load.duration,
        "warmup_s": load.warmup,
        "drill": f"{args.slow_model} sleeps {args.slow_ms:g} ms per execute"
        if args.slow_model
        else None,
        "tolerances": tolerances.model_dump(),
        **figures,
    }
    checks = None if baseline is None else compare(record, baseline, tolerances)
    if baseline is not None and shape(baseline) != shape(record):
        logger.warning(
            "the baseline was measured with %s, this run with %s: only matching figures compared",
            shape(baseline),
            shape(record),
        )
    record["checks"] = None if checks is None else [c.as_dict() for c in checks]
    record["passed"] = checks is None or all(c.passed for c in checks)
    append_history(out, record)
    if args.record_baseline:
        write_baseline(baseline_path, record)
    text = markdown(record, checks, _note(args, baseline_path, checks))
    (out / MARKDOWN_FILE).write_text(text, encoding="utf-8")
    plot(record, baseline, out / PLOT_FILE)
    print(text, flush=True)
    return 0 if record["passed"] else EXIT_REGRESSION


def register_perf(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``perf`` to the subcommands of ``lmforge bench``."""
    parser = actions.add_parser(
        "perf",
        help="continuous performance test of the demo models against a recorded baseline",
        description="Serve the demo repository (Triton + gateway), measure each model "
        "(latency, throughput, load time, RSS, CPU) and compare same-run ratios against "
        "a recorded baseline; exit 1 on a regression.",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEMO_MODEL_NAMES),
        choices=DEMO_MODEL_NAMES,
        help="demo models to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--repository",
        default=None,
        help="demo repository (default: $LMFORGE_CACHE/demo-repository, as `lmforge up`)",
    )
    parser.add_argument("--no-build", action="store_true", help="use --repository as it is")
    parser.add_argument("--concurrency", type=int, default=1, help="closed-loop workers")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per model")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--sentences", type=int, default=128, help="SST-2 dev sentences used")
    parser.add_argument("--new-tokens", type=int, default=16, help="per generate request")
    parser.add_argument(
        "--out", default=str(RESULTS), help="folder of the history, baseline and report"
    )
    parser.add_argument("--baseline", default=None, help=f"default: OUT/{BASELINE_FILE}")
    parser.add_argument(
        "--record-baseline", action="store_true", help="write this run as the baseline"
    )
    parser.add_argument("--tolerances", default=None, help="YAML overriding PerfTolerances")
    parser.add_argument(
        "--slow-model",
        default=None,
        help="drill: serve a temporary copy of the repository in which this model's "
        "encoder sleeps --slow-ms per execute; the run must then fail and name it",
    )
    parser.add_argument("--slow-ms", type=float, default=20.0, help="drill sleep (ms)")
    parser.set_defaults(handler=_run)
