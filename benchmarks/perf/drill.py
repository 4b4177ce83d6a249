"""The drill of ``lmforge bench perf --slow-model``: a slowed *copy* of a repository.

The copy (files hard-linked where possible) gets a new ``<model>_encoder/1/model.py`` whose
``execute`` sleeps before doing its work, so a test can show that a slowed model fails the
check and is named. The repository it was copied from and the product code stay untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from benchmarks.perf.checks import PerfConfigError

logger = logging.getLogger(__name__)

DRILL_MARKER = (
    "# --- lmforge bench perf --slow-model drill (a temporary copy; not product code) ---"
)
_WRAPPER = """

{marker}
import time as _drill_time

_drill_execute = TritonPythonModel.execute


def _drill_slow_execute(self, requests):
    _drill_time.sleep({seconds!r})
    return _drill_execute(self, requests)


TritonPythonModel.execute = _drill_slow_execute
"""


def _link_or_copy(source: str, target: str) -> object:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def slowed_copy(repository: Path, model: str, slow_ms: float, dest: Path) -> Path:
    """Copy ``repository`` to ``dest``; the copy's ``<model>_encoder`` sleeps ``slow_ms``
    in every ``execute``. Returns ``dest``."""
    if slow_ms <= 0:
        raise PerfConfigError(f"--slow-ms must be > 0, got {slow_ms:g}")
    if not (repository / f"{model}_encoder" / "1" / "model.py").is_file():
        raise PerfConfigError(f"--slow-model {model}: {repository} has no {model}_encoder model.py")
    shutil.copytree(repository, dest, copy_function=_link_or_copy, symlinks=True)
    encoder = dest / f"{model}_encoder" / "1" / "model.py"
    source = encoder.read_text(encoding="utf-8")
    encoder.unlink()  # break the hard link before writing: the original stays as it was
    wrapper = _WRAPPER.format(marker=DRILL_MARKER, seconds=slow_ms / 1000)
    encoder.write_text(source + wrapper, encoding="utf-8")
    logger.warning("drill: %s sleeps %.0f ms per execute (copy at %s)", encoder, slow_ms, dest)
    return dest
