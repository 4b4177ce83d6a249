"""``lmforge bench perf`` (``make perf``): continuous performance testing of the served models.

``measure`` serves a repository and measures each model (latency percentiles, throughput,
load time, CPU use and resident memory of Triton, its model processes and the gateway),
``references`` measures the same models in process, ``checks`` compares same-run ratios with
the recorded baseline, ``report`` writes the history line, the baseline and the report,
``drill`` slows a copy of one model to show a regression is caught, ``cli`` wires them.
"""

from benchmarks.perf.cli import register_perf

__all__ = ["register_perf"]
