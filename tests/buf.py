"""The buf command and the contract baseline, as the Makefile names them (one source of truth).

``make lint`` runs ``$(BUF) lint`` and ``$(BUF) breaking --against $(CONTRACT_BASELINE)``; the
tests run the same buf version against the same file. buf comes from npm through ``npx``, which
``make test`` already needs, so a machine without Node.js fails here with the reason instead of
skipping (``.ci/run`` installs nodejs and npm when npx is missing).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKEFILE = ROOT / "Makefile"


def makefile_variable(name: str) -> str:
    """The value of ``NAME := value`` (or ``NAME = value``) in the Makefile."""
    text = MAKEFILE.read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(name)}\s*:?=\s*(.+?)\s*$", text, re.MULTILINE)
    if match is None:
        raise AssertionError(f"the Makefile defines no {name} variable")
    return match.group(1)


def require_node(*tools: str) -> None:
    """Fail (not skip) when a Node.js tool is missing: ``make test`` needs them."""
    missing = [tool for tool in ("npx", *tools) if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: buf (and the TypeScript client) run on Node.js; "
            "install nodejs and npm (.ci/run does with apt-get)",
            pytrace=False,
        )


def buf_command() -> list[str]:
    """The Makefile's ``BUF`` (``npx --yes @bufbuild/buf@<version>``) as an argument list."""
    require_node()
    command = shlex.split(makefile_variable("BUF"))
    if command[0] != "npx" or not any(a.startswith("@bufbuild/buf@") for a in command):
        raise AssertionError(f"BUF is not a pinned `npx @bufbuild/buf@<version>`: {command}")
    return command


def contract_baseline() -> Path:
    """The recorded image of the released contract that ``buf breaking`` checks against."""
    return ROOT / makefile_variable("CONTRACT_BASELINE")
