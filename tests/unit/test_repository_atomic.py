"""Swapping a finished repository into place."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.errors import RepositoryError
from trainer.repository.builder import MANIFEST, check_destination, replace_directory


def _folder(path: Path, marker: str) -> Path:
    path.mkdir()
    (path / MANIFEST).write_text(marker)
    return path


def test_replace_moves_staging_into_a_new_destination(tmp_path: Path) -> None:
    staging = _folder(tmp_path / ".repo.building", "new")
    replace_directory(staging, tmp_path / "repo")
    assert (tmp_path / "repo" / MANIFEST).read_text() == "new"
    assert not staging.exists()


def test_replace_swaps_out_an_existing_repository_and_removes_it(tmp_path: Path) -> None:
    old = _folder(tmp_path / "repo", "old")
    (old / "stale_model").mkdir()
    staging = _folder(tmp_path / ".repo.building", "new")
    replace_directory(staging, old)
    assert (tmp_path / "repo" / MANIFEST).read_text() == "new"
    assert not (tmp_path / "repo" / "stale_model").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_destination_checks(tmp_path: Path) -> None:
    check_destination(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty")
    check_destination(_folder(tmp_path / "repo", "{}"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(RepositoryError, match="not a directory"):
        check_destination(tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("x")
    with pytest.raises(RepositoryError, match="refusing"):
        check_destination(tmp_path / "other")


def test_tensorrt_target_without_tensorrt_fails_fast_and_leaves_nothing(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this checks the error on machines without it")
    from trainer.errors import TensorRTUnavailableError
    from trainer.repository.builder import build_repository
    from trainer.repository.spec import parse_spec

    spec = parse_spec(
        {"models": [{"name": "m", "task": "embed", "checkpoint": "/x", "target": "tensorrt"}]}
    )
    with pytest.raises(TensorRTUnavailableError, match="lmforge\\[gpu\\]"):
        build_repository(spec, tmp_path / "repo")
    assert list(tmp_path.iterdir()) == []
