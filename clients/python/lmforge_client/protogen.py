"""Generate the Python stubs of the public contract from ``protos/``.

``python -m lmforge_client.protogen [--out DIR]`` runs ``grpc_tools.protoc`` with the ``mypy-protobuf``
plugins and writes ``*_pb2.py``, ``*_pb2_grpc.py`` and their ``.pyi`` files under
``DIR/lmforge/v1/`` (default: ``clients/python/lmforge_client/_proto``). protoc emits absolute imports such as
``from lmforge.v1 import common_pb2``; they are rewritten to
``from lmforge_client._proto.lmforge.v1 import common_pb2`` so the stubs live inside this package.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "protos"
DEFAULT_OUT = Path(__file__).resolve().parent / "_proto"
PACKAGE_PREFIX = "lmforge_client._proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

_IMPORT_RE = re.compile(r"^(\s*)(from|import) lmforge\.v1(\b)", re.MULTILINE)
_QUALIFIED_RE = re.compile(r"(?<![\w.])lmforge\.v1\.(\w+_pb2)\b")


class ProtogenError(RuntimeError):
    """protoc failed or a plugin is missing."""


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """The ``.proto`` files of the contract, relative to ``proto_root``, sorted."""
    return sorted(p.relative_to(proto_root) for p in proto_root.rglob("*.proto"))


def _plugin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ProtogenError(f"protoc plugin {name!r} not found (install mypy-protobuf)")
    return found


def rewrite_imports(source: str) -> str:
    """Point protoc's absolute ``lmforge.v1`` imports at ``lmforge_client._proto.lmforge.v1``."""
    source = _IMPORT_RE.sub(rf"\1\2 {PACKAGE_PREFIX}.lmforge.v1\3", source)
    return _QUALIFIED_RE.sub(rf"{PACKAGE_PREFIX}.lmforge.v1.\1", source)


def _run_protoc(proto_root: Path, out: Path) -> None:
    from grpc_tools import protoc  # dev dependency, only needed here

    wkt_include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{wkt_include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(p) for p in proto_files(proto_root)),
    ]
    code = protoc.main(args)
    if code != 0:
        raise ProtogenError(f"protoc exited with status {code}")


def generate(out: Path = DEFAULT_OUT, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Regenerate the stubs into ``out``; returns the files written, relative to ``out``.

    Generation happens in a scratch folder; only the generated files (and the package
    ``__init__.py`` files) are replaced in ``out``, stale generated files are removed.
    """
    with tempfile.TemporaryDirectory(prefix="lmforge-protogen-") as scratch:
        scratch_dir = Path(scratch)
        _run_protoc(proto_root, scratch_dir)
        generated = sorted(
            p.relative_to(scratch_dir)
            for p in scratch_dir.rglob("*")
            if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
        )
        for stale in out.rglob("*"):
            generated_here = stale.is_file() and stale.name.endswith(GENERATED_SUFFIXES)
            if generated_here and stale.relative_to(out) not in generated:
                stale.unlink()
        written: list[Path] = []
        for rel in generated:
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            text = rewrite_imports((scratch_dir / rel).read_text(encoding="utf-8"))
            target.write_text(text, encoding="utf-8")
            written.append(rel)
        for package_dir in {out, *((out / rel).parent for rel in generated)}:
            d = package_dir
            while True:
                init = d / "__init__.py"
                if not init.exists():
                    init.write_text('"""Generated code; do not edit."""\n', encoding="utf-8")
                    written.append(init.relative_to(out))
                if d == out:
                    break
                d = d.parent
    logger.info("wrote %d generated files under %s", len(written), out)
    return sorted(set(written))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmforge_client.protogen", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--protos", type=Path, default=PROTO_ROOT, help="proto root folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for rel in generate(args.out, args.protos):
        print(args.out / rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
