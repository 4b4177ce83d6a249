"""The rollout's writes of the gateway config keep the operator's comments and formatting, and a
read-only config is refused before anything changes, with how to run a rollout against it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from rollout.errors import RolloutError
from rollout.gateway_file import GatewayConfigFile
from rollout.plan import Stage
from rollout.routes import deployment_entry, idle_route, route_mapping, stage_route
from tests.unit.test_rollout_engine import FakeGateway, FakeTriton, _rollout, _setup

OLD = deployment_entry("minilm", "minilm", 1, "default")
NEW = deployment_entry("minilm-v2", "minilm", 2, "default")

CONFIG = """\
# The gateway of the demo: the operator's notes stay where they are.
server:
  host: 127.0.0.1   # loopback only
  port: 0
triton:
  url: "127.0.0.1:2"
  repository: {repository}
models:
  # the embedder: rolled out by lmforge rollout
  - name: minilm   # clients call it by this name
    task: embed
    triton_model: minilm
    batching: {{max_batch_size: 16}}   # measured on 2 cores

  # the classifier
  - name: other
    task: classify
    triton_model: sentiment   # fine-tuned on SST-2
# end of the routes
"""


def _write(path: Path, text: str) -> GatewayConfigFile:
    path.write_text(text.format(repository=path.parent), encoding="utf-8")
    return GatewayConfigFile(path)


def _unchanged_outside_the_route(before: str, after: str) -> None:
    """The file is byte for byte as it was up to the route's entry and from the blank line
    after it (the classifier's comment, the classifier, the last comment)."""
    assert after.startswith(before.split("name: minilm")[0])
    assert after.endswith(before[before.index("\n\n") :])


@pytest.mark.parametrize("style", ["indented", "flush"])
def test_comments_and_formatting_survive_each_rollout_step(tmp_path: Path, style: str) -> None:
    text = (
        CONFIG
        if style == "indented"
        else CONFIG.replace("\n  - ", "\n- ")
        .replace("\n    ", "\n  ")
        .replace("\n  # the", "\n# the")
    )
    config = _write(tmp_path / "gateway.yaml", text)
    before = config.path.read_text()
    base = config.route("minilm")
    steps = [
        route_mapping(base, [OLD]),
        idle_route(base, OLD, NEW),
        stage_route(base, OLD, NEW, Stage(weight=10)),
        route_mapping(base, [NEW]),
    ]
    for route in steps:
        assert config.write_route(route)
        after = config.path.read_text()
        assert yaml.safe_load(after)["models"][0] == route
        for comment in (
            "# The gateway of the demo: the operator's notes stay where they are.",
            "# loopback only",
            "# the embedder: rolled out by lmforge rollout",
            "# clients call it by this name",
            "# the classifier",
            "# fine-tuned on SST-2",
            "# end of the routes",
        ):
            assert after.count(comment) == 1, (comment, after)
        _unchanged_outside_the_route(before, after)
        assert '"127.0.0.1:2"' in after  # quoting kept
    # the classifier's comment still introduces the classifier
    lines = config.path.read_text().splitlines()
    assert lines[lines.index(next(x for x in lines if "# the classifier" in x)) + 1].strip() == (
        "- name: other"
    )


def _read_only_cases(tmp_path: Path) -> list[tuple[str, GatewayConfigFile]]:
    """A read-only file; a writable file in a read-only folder (as in a ConfigMap mount)
    where that can be made (root may create files in a folder without write permission)."""
    (tmp_path / "file").mkdir()
    read_only = _write(tmp_path / "file" / "gateway.yaml", CONFIG)
    os.chmod(read_only.path, 0o444)
    cases = [("the file is read-only", read_only)]
    (tmp_path / "mount").mkdir()
    in_read_only_folder = _write(tmp_path / "mount" / "gateway.yaml", CONFIG)
    os.chmod(in_read_only_folder.path.parent, 0o555)
    if not os.access(in_read_only_folder.path.parent, os.W_OK):
        cases.append(("is read-only", in_read_only_folder))
    return cases


def test_a_read_only_config_is_refused_unchanged_with_how_to_roll_out(tmp_path: Path) -> None:
    cases = _read_only_cases(tmp_path)
    try:
        for problem, config in cases:
            before = config.path.read_bytes()
            mtime = config.path.stat().st_mtime_ns
            with pytest.raises(RolloutError) as caught:
                config.write_route(idle_route(config.route("minilm"), OLD, NEW))
            message = str(caught.value)
            assert problem in message and str(config.path) in message
            assert "--config" in message and "writable" in message and "ConfigMap" in message
            assert config.path.read_bytes() == before
            assert config.path.stat().st_mtime_ns == mtime
            assert [p.name for p in config.path.parent.iterdir()] == ["gateway.yaml"]
    finally:
        for _, config in cases:
            os.chmod(config.path.parent, stat.S_IRWXU)
            os.chmod(config.path, 0o644)


def test_a_rollout_against_a_read_only_config_changes_nothing(tmp_path: Path) -> None:
    plan, repo = _setup(tmp_path)
    before = plan.gateway.config.read_bytes()
    os.chmod(plan.gateway.config, 0o444)
    try:
        with pytest.raises(RolloutError, match="cannot be rewritten"):
            _rollout(plan, FakeGateway(plan.gateway.config), FakeTriton(repo)).begin()
    finally:
        os.chmod(plan.gateway.config, 0o644)
    assert plan.gateway.config.read_bytes() == before
    assert not plan.state_path.exists()
    assert not (repo / "minilm_encoder" / "2").exists()
    assert (repo / "minilm" / "config.pbtxt").read_text() == 'name: "minilm"\nmax_batch_size: 8\n'
