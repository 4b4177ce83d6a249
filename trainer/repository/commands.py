"""``lmforge repo``: build a model repository from a spec, or the demo repository.

Imports stay light at module level; the handlers import torch and friends when they run.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.repository.errors import RepositoryError

if TYPE_CHECKING:
    from trainer.repository.builder import BuildReport

logger = logging.getLogger(__name__)


def format_report(report: BuildReport) -> str:
    """A short summary table of a build."""
    header = f"{'model':<14} {'task':<9} {'target':<12} {'rows':>5} {'max|diff|':>10} {'min cos':>9} {'int8 cos':>9} {'MB':>7} {'s':>6}"
    lines = [f"repository: {report.path}", header, "-" * len(header)]
    for m in report.models:
        q = f"{m.quantization.min_cosine:.5f}" if m.quantization else "-"
        lines.append(
            f"{m.name:<14} {m.task:<9} {m.target:<12} {m.parity.rows:>5} "
            f"{m.parity.max_abs_diff:>10.2e} {m.parity.min_cosine:>9.6f} {q:>9} "
            f"{m.encoder_mb:>7.1f} {m.seconds:>6.1f}"
        )
    return "\n".join(lines)


def _build(args: argparse.Namespace) -> int:
    from trainer.repository.builder import build_repository
    from trainer.repository.spec import load_spec

    try:
        spec = load_spec(Path(args.spec))
        report = build_repository(spec, Path(args.out))
    except RepositoryError as exc:
        logger.error("%s", exc)
        return 1
    print(format_report(report))
    return 0


def _check(args: argparse.Namespace) -> int:
    from trainer.repository.spec import load_spec

    try:
        spec = load_spec(Path(args.spec))
    except RepositoryError as exc:
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
    except RepositoryError as exc:
        logger.error("%s", exc)
        return 1
    metrics = demo.sentiment_metrics
    print(
        f"sentiment: SST-2 dev accuracy {metrics['dev_accuracy']:.4f} on {metrics['dev_rows']} "
        f"sentences (fine-tuned on {metrics['train_rows']} rows in {metrics['train_seconds']:.0f} s; "
        f"checkpoint {demo.sentiment_checkpoint})"
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
        "demo", help="build the demo repository (minilm embedder, sentiment classifier)"
    )
    demo.add_argument("--out", required=True, help="repository folder (replaced atomically)")
    demo.add_argument(
        "--min-accuracy",
        type=float,
        default=0.85,
        help="SST-2 dev accuracy the classifier must reach",
    )
    demo.set_defaults(handler=_demo)
