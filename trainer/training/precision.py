"""Which arithmetic a run trains in, decided once from the config and the hardware.

``auto`` trains in bf16 where the processor computes it natively and in fp32 elsewhere. On a
CPU, bf16 is torch autocast around the forward pass over fp32 master weights (the optimizer
and DeepSpeed stay in fp32): measured here, DeepSpeed's own bf16 optimizer was slower on CPU
than autocast. On a GPU, DeepSpeed's bf16/fp16 modes are used as they are.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.errors import ConfigError

_CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX); False where unknown."""
    try:
        flags = _CPUINFO.read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Precision:
    name: str  # what the run trains in: "fp32" | "bf16" | "fp16"
    deepspeed: str  # the DeepSpeed mode: "fp32" | "bf16" | "fp16"
    autocast: bool  # torch autocast (CPU bf16) around forward passes

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            yield


def resolve(requested: str, cuda: bool) -> Precision:
    """The precision for ``requested`` (``auto``/``fp32``/``bf16``/``fp16``) on this machine."""
    if requested == "auto":
        native = torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16()
        requested = "bf16" if native else "fp32"
    if requested == "fp32":
        return Precision("fp32", "fp32", False)
    if requested == "fp16":
        if not cuda:
            raise ConfigError("deepspeed.precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        return Precision("fp16", "fp16", False)
    if cuda:
        return Precision("bf16", "bf16", False)
    return Precision("bf16", "fp32", True)
