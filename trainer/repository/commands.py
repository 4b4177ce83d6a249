"""``lmforge repo``: build a model repository from a spec, or the demo repository.

Imports stay light at module level; the handlers import torch and friends when they run.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.errors import TrainerError

if TYPE_CHECKING:
    from trainer.repository.builder import BuildReport

logger = logging.getLogger(__name__)


def format_report(report: BuildReport) -> str:
    """A short summary table of a build."""
    header = f"{'model':<14} {'task':<9} {'target':<12} {'rows':>5} {'max|diff|':>10} {'min cos':>9} {'int8 cos':>9} {'MB':>7} {'s':>6}"
    lines = [f"repository: {report.path}", header, "-" * len(header)]
    for m in report.models:
        q = _cosine(m.quantization.outputs.min_cosine) if m.quantization else "-"
        lines.append(
            f"{m.name:<14} {m.task:<9} {m.target:<12} {m.parity.rows:>5} "
            f"{m.parity.max_abs_diff:>10.2e} {_cosine(m.parity.min_cosine):>9} {q:>9} "
            f"{m.encoder_mb:>7.1f} {m.seconds:>6.1f}"
        )
        if m.quantization is not None and m.quantization.metric is not None:
            gate = m.quantization.metric
            lines.append(
                f"{'':<14} {m.quantization.method}: {gate.metric} {gate.fp32:.4f} (FP32) -> "
                f"{gate.int8:.4f} on {gate.rows} rows (max drop {gate.max_drop})"
            )
        if m.engine_parity is not None:
            lines.append(
                f"{'':<14} TensorRT engine vs PyTorch: max |diff| "
                f"{m.engine_parity.max_abs_diff:.2e}, min cosine {_cosine(m.engine_parity.min_cosine)}"
            )
    return "\n".join(lines)


def _cosine(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _build(args: argparse.Namespace) -> int:
    from trainer.repository.builder import build_repository
    from trainer.repository.spec import load_spec

    try:
        spec = load_spec(Path(args.spec))
        report = build_repository(spec, Path(args.out))
    except TrainerError as exc:
        logger.error("%s", exc)
        return 1
    print(format_report(report))
    return 0


def _check(args: argparse.Namespace) -> int:
    from trainer.repository.spec import load_spec

    try:
        spec = load_spec(Path(args.spec))
    except TrainerError as exc:
        logger.error("%s", exc)
        return 1
    missing = [
        str(m.checkpoint) for m in spec.models if not (m.checkpoint / "config.json").exists()
    ]
    if missing:
        logger.error("checkpoints without config.json: %s", ", ".join(missing))
        return 1
    for m in spec.models:
        print(
            f"{m.name}: {m.task} from {m.checkpoint} → target {m.target}, buckets {m.all_buckets}"
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from trainer.repository.demo import build_demo_repository

    try:
        demo = build_demo_repository(Path(args.out), min_accuracy=args.min_accuracy)
    except TrainerError as exc:
        logger.error("%s", exc)
        return 1
    print(
        f"sentiment: SST-2 dev accuracy {demo.sentiment_accuracy:.4f} "
        f"(checkpoint {demo.sentiment_checkpoint})"
    )
    print(format_report(demo.report))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    repo = subparsers.add_parser("repo", help="build Triton model repositories")
    actions = repo.add_subparsers(dest="repo_command", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="export checkpoints and write a repository")
    build.add_argument("spec", help="repository spec (YAML)")
    build.add_argument("--out", required=True, help="repository folder (replaced atomically)")
    build.set_defaults(handler=_build)

    check = actions.add_parser("check", help="validate a spec without exporting")
    check.add_argument("spec", help="repository spec (YAML)")
    check.set_defaults(handler=_check)

    demo = actions.add_parser(
        "demo",
        help="build the demo repository (minilm embedder, sentiment classifier, smollm2 generator)",
    )
    demo.add_argument("--out", required=True, help="repository folder (replaced atomically)")
    demo.add_argument(
        "--min-accuracy",
        type=float,
        default=0.85,
        help="SST-2 dev accuracy the classifier must reach",
    )
    demo.set_defaults(handler=_demo)
