"""``lmforge up --spec``: the routes derived from a repository spec, the demo's derived the same
way, the one-line exit-2 errors on a bad spec, and the argument parsing."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge import up
from trainer.repository.demo_serving import (
    DEMO_MODELS,
    routes_for_spec,
    spec_repository_key,
)
from trainer.repository.spec import parse_spec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge")
    up.register(parser.add_subparsers(dest="command"))
    return parser


def _checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder


def _write_spec(tmp_path: Path) -> Path:
    for name in ("emb", "cls", "lm"):
        _checkpoint(tmp_path / "ckpt" / name)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models:\n"
        "  - {name: my-embedder, task: embed, checkpoint: ckpt/emb}\n"
        "  - {name: my_classifier, task: classify, checkpoint: ckpt/cls, max_length: 64}\n"
        "  - {name: writer, task: generate, checkpoint: ckpt/lm, max_length: 1024}\n"
    )
    return spec


EXPECTED = (
    {"name": "my-embedder", "task": "embed", "triton_model": "my-embedder"},
    {"name": "my_classifier", "task": "classify", "triton_model": "my_classifier"},
    {"name": "writer", "task": "generate", "triton_model": "writer"},
)


def test_routes_of_a_spec_one_per_model_named_after_it(tmp_path: Path) -> None:
    assert up.spec_routes(_write_spec(tmp_path)) == EXPECTED


def test_the_routes_make_a_valid_gateway_config(tmp_path: Path) -> None:
    routes = up.spec_routes(_write_spec(tmp_path))
    config = up.demo_config("127.0.0.1:8001", tmp_path, 50051, None, None, routes)
    assert [(m.name, m.task, m.triton_model) for m in config.models] == [
        (r["name"], r["task"], r["triton_model"]) for r in EXPECTED
    ]


def test_the_demo_routes_are_the_routes_of_the_demo_spec(tmp_path: Path) -> None:
    from trainer.repository.demo import demo_spec

    spec = demo_spec(tmp_path / "m", tmp_path / "s", tmp_path / "dev.tsv", tmp_path / "lm")
    assert routes_for_spec(spec) == DEMO_MODELS
    assert [m["name"] for m in DEMO_MODELS] == ["minilm", "sentiment", "smollm2"]
    default = up.demo_config("127.0.0.1:8001", tmp_path, 50051, None)
    assert [m.name for m in default.models] == ["minilm", "sentiment", "smollm2"]


def test_routes_for_spec_takes_the_task_from_the_spec() -> None:
    spec = parse_spec({"models": [{"name": "a", "task": "classify", "checkpoint": "x"}]})
    assert routes_for_spec(spec) == ({"name": "a", "task": "classify", "triton_model": "a"},)


def test_the_printed_calls_cover_every_task(tmp_path: Path) -> None:
    grpc = "\n".join(up.grpc_call_lines("lmforge", "127.0.0.1:50051", EXPECTED))
    assert "embed --model my-embedder" in grpc
    assert "classify --model my_classifier" in grpc
    assert "generate --model writer --stream --chat" in grpc
    http = "\n".join(up.http_call_lines(8080, EXPECTED))
    assert "/v1/embeddings" in http and '"model": "my-embedder"' in http
    assert "/predict" in http and '"model": "my_classifier"' in http
    assert "/v1/chat/completions" in http and '"model": "writer"' in http


def test_the_repository_key_is_the_spec_content(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path)
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(spec.read_bytes())
    assert spec_repository_key(spec) == spec_repository_key(copy)
    copy.write_text(spec.read_text() + "\n# changed\n")
    assert spec_repository_key(spec) != spec_repository_key(copy)


def test_arguments() -> None:
    args = _parser().parse_args(
        ["up", "--spec", "s.yaml", "--port", "1", "--http-port", "2", "--metrics-port", "3"]
    )
    assert (args.spec, args.port, args.http_port, args.metrics_port) == ("s.yaml", 1, 2, 3)
    assert args.repository is None and not args.no_build and callable(args.handler)
    demo = _parser().parse_args(["up"])
    assert demo.spec is None and demo.port is None and demo.http_port is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read repository spec"),
        ("models: [\n", "not valid YAML"),
        ("models: []\n", "models"),
        ("models:\n  - {name: Bad Name, task: embed, checkpoint: x}\n", "model name"),
        ("models:\n  - {name: a, task: translate, checkpoint: x}\n", "task"),
        ("models:\n  - {name: a, task: embed, checkpoint: nowhere}\n", "without config.json"),
    ],
)
def test_a_bad_spec_is_one_line_on_stderr_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    spec = tmp_path / "spec.yaml"
    if content is not None:
        spec.write_text(content)
    args = _parser().parse_args(["up", "--spec", str(spec), "--repository", str(tmp_path / "r")])
    assert args.handler(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge up: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_the_command_line_exits_2_without_a_traceback_or_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from lmforge.cli import main; rc = main(['up', '--spec', sys.argv[1]]); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules)); sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip() == "[]"
    assert "Traceback" not in result.stderr
    assert "missing.yaml" in result.stderr
