"""What the vLLM-backed generate model hands to vLLM, and what it makes of vLLM's answers.

Plain functions of plain values (no ``vllm`` import here), so they are unit-tested without
vLLM installed: the engine arguments from the model's ``config.pbtxt`` parameters, a
request's sampling arguments from our :class:`~.sampling.SamplingParams`, the contract's
finish reason from vLLM's, and the bounded admission in front of the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import contract
from .sampling import SamplingParams

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class EngineSettings:
    max_model_len: int
    max_sequences: int
    max_waiting: int
    dtype: str = "float32"
    device: str = "cpu"
    kv_cache_gib: float = 1.0
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    compile: bool = False
    cpu_threads_bind: str = "auto"
    cpu_reserved_cores: int = 0

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> EngineSettings:
        """From the model's string parameters (the builder wrote every one of them)."""
        settings = cls(
            max_model_len=int(params[contract.PARAM_MAX_LENGTH])
            + int(params[contract.PARAM_MAX_NEW_TOKENS]),
            max_sequences=int(params[contract.PARAM_MAX_SEQUENCES]),
            max_waiting=int(params[contract.PARAM_MAX_WAITING]),
            dtype=params[contract.PARAM_VLLM_DTYPE],
            device=params[contract.PARAM_VLLM_DEVICE],
            kv_cache_gib=float(params[contract.PARAM_VLLM_KV_CACHE_GIB]),
            gpu_memory_utilization=float(params[contract.PARAM_VLLM_GPU_MEMORY]),
            tensor_parallel_size=int(params[contract.PARAM_VLLM_TENSOR_PARALLEL]),
            compile=params[contract.PARAM_VLLM_COMPILE] == "true",
            cpu_threads_bind=params.get(contract.PARAM_VLLM_CPU_THREADS_BIND, "auto"),
            cpu_reserved_cores=int(params.get(contract.PARAM_VLLM_CPU_RESERVED, "0")),
        )
        if settings.dtype not in DTYPES:
            raise ValueError(f"{contract.PARAM_VLLM_DTYPE} must be one of {DTYPES}")
        if settings.device not in DEVICES:
            raise ValueError(f"{contract.PARAM_VLLM_DEVICE} must be one of {DEVICES}")
        return settings

    def environment(self) -> dict[str, str]:
        """Variables vLLM reads from the environment at start-up."""
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if self.device == "cpu":
            env["VLLM_CPU_KVCACHE_SPACE"] = f"{self.kv_cache_gib:g}"
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_threads_bind
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(self.cpu_reserved_cores)
        return env

    def engine_arguments(self, folder: Path) -> dict[str, Any]:
        """Keyword arguments of ``vllm.engine.arg_utils.AsyncEngineArgs``."""
        args: dict[str, Any] = {
            "model": str(folder),
            "tokenizer": str(folder),
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_sequences,
            "enforce_eager": not self.compile,
            "seed": 0,
            "disable_log_stats": True,
        }
        if self.device == "cuda":
            args["tensor_parallel_size"] = self.tensor_parallel_size
            args["gpu_memory_utilization"] = self.gpu_memory_utilization
        return args


def sampling_arguments(params: SamplingParams, eos_ids: frozenset[int]) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one request (the output kind is the
    caller's): our zeros that mean "off" become vLLM's neutral values; the stop strings are
    left out of the text; end of sequence is every id the prompt encoder treats as one."""
    return {
        "n": 1,
        "max_tokens": params.max_new_tokens,
        "temperature": 0.0 if params.greedy else params.temperature,
        "top_p": params.top_p if 0 < params.top_p < 1 else 1.0,
        "top_k": params.top_k if params.top_k > 0 else -1,
        "repetition_penalty": params.repetition_penalty if params.penalizes_repetition else 1.0,
        "seed": params.seed,
        "stop": list(params.stop),
        "stop_token_ids": sorted(eos_ids),
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
        "spaces_between_special_tokens": False,
    }


def finish(finish_reason: str | None, stop_reason: Any) -> tuple[str, str]:
    """The contract's (finish reason, matched stop string) for vLLM's ``finish_reason`` and
    ``stop_reason`` (a stop string, a stop token id, or ``None``)."""
    if finish_reason == "length":
        return contract.FINISH_LENGTH, ""
    if finish_reason == "stop":
        if isinstance(stop_reason, str):
            return contract.FINISH_STOP_SEQUENCE, stop_reason
        return contract.FINISH_END_OF_SEQUENCE, ""
    return contract.FINISH_CANCELLED, ""


class Admission:
    """At most ``running + waiting`` requests in the engine: a request at the engine's
    capacity waits in vLLM's own queue (bounded here), one beyond the bound is refused."""

    def __init__(self, running: int, waiting: int) -> None:
        self.limit = running + waiting
        self.running = running
        self._held = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self._held >= self.limit:
                return False
            self._held += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._held = max(0, self._held - 1)

    @property
    def held(self) -> int:
        return self._held

    def refusal(self) -> str:
        return contract.capacity_message(
            f"{self.running} sequences are being generated and {self.limit - self.running} "
            "more are waiting"
        )
