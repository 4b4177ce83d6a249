"""Benchmarks and drills: the product measured end to end (``lmforge bench ...``).

Every benchmark writes its results under ``--out``; the default is :data:`RESULTS`, a folder
relative to the current directory (``benchmarks/results`` when run from a checkout, as
``make bench`` / ``make perf`` do), never a folder inside the installed package.
"""

from pathlib import Path

#: where results go unless ``--out`` says otherwise (relative to the current directory)
RESULTS = Path("benchmarks") / "results"
