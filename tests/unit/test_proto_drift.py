"""The committed stubs in clients/python/lmforge_client/_proto must be exactly what protos/ generates."""

from __future__ import annotations

import filecmp
from pathlib import Path

from lmforge_client import protogen


def test_generated_stubs_match_protos(tmp_path: Path) -> None:
    written = protogen.generate(tmp_path)
    assert Path("lmforge/v1/inference_service_pb2_grpc.py") in written
    committed = protogen.DEFAULT_OUT
    fresh = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    existing = {
        p.relative_to(committed)
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert existing == fresh, "files differ: run `python -m lmforge_client.protogen`"
    stale = [
        str(rel)
        for rel in sorted(fresh)
        if not filecmp.cmp(tmp_path / rel, committed / rel, shallow=False)
    ]
    assert not stale, f"stubs out of date, run `python -m lmforge_client.protogen`: {stale}"


def test_generated_imports_live_under_gateway_proto() -> None:
    text = (protogen.DEFAULT_OUT / "lmforge/v1/classify_pb2.py").read_text()
    assert "from lmforge_client._proto.lmforge.v1 import common_pb2" in text
    assert "from lmforge.v1" not in text


def test_rewrite_imports_handles_plain_and_qualified_forms() -> None:
    source = "from lmforge.v1 import a_pb2 as x\nimport lmforge.v1.b_pb2\ny = lmforge.v1.b_pb2.M\n"
    out = protogen.rewrite_imports(source)
    assert "from lmforge_client._proto.lmforge.v1 import a_pb2" in out
    assert "import lmforge_client._proto.lmforge.v1.b_pb2" in out
    assert "y = lmforge_client._proto.lmforge.v1.b_pb2.M" in out
