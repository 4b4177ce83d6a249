"""The ``generation`` section of a repository spec model with task ``generate``.

Example::

    - name: smollm2
      task: generate
      checkpoint: ./checkpoints/smollm2      # an AutoModelForCausalLM folder with its tokenizer
      max_length: 1024                       # prompt tokens, at most
      generation:
        max_new_tokens: 512                  # the most one request may ask for
        default_max_new_tokens: 128          # when a request asks for 0 (default: 128)
        max_sequences: 8                     # decoded together (in-flight batching)
        max_kv_tokens: 8192                  # sum of prompt + max_new_tokens over them
        max_waiting: 8                       # more requests queued in the engine, at most
        engine: vllm                         # vllm (default) | builtin
        vllm:                                # engine vllm only
          dtype: float32                     # auto | float32 | bfloat16 | float16
          compile: false                     # torch.compile at start-up (slow start on CPU)
          kv_cache_gib: 1                    # KV cache on CPU (VLLM_CPU_KVCACHE_SPACE)
          tensor_parallel_size: 1            # GPUs per model (target tensorrt: CUDA)
          cpu_threads_bind: auto             # cores for vLLM's threads on CPU, e.g. "0-1"
          cpu_reserved_cores: 0              # with auto: cores left out (vLLM's default: 1)
          python_env: null                   # the venv with vllm; null: found (see below)
        cpu_threads: 0                       # builtin engine: torch intra-op threads

Engine ``vllm`` runs vLLM's async engine inside Triton: ``vllm-cpu`` for target ``cpu``,
``vllm`` on CUDA for target ``tensorrt`` (the GPU target). vLLM pins a transformers release of
its own, so it lives in a python environment of its own (``make vllm-env`` makes
``.venv-vllm`` next to ``.venv``); the model's ``EXECUTION_ENV_PATH`` names it. ``python_env``
null finds it: ``$LMFORGE_VLLM_ENV``, else ``.venv-vllm`` beside the running environment, else
the running environment when it imports ``vllm`` itself (e.g. the NGC Triton image). Engine
``builtin`` is the PyTorch decode loop (float32, no extra environment), for machines without
vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lmforge_core.strict import StrictModel

DEFAULT_CHECK_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
    "The weather today is",
)


class VllmSpec(StrictModel):
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    compile: bool = False
    kv_cache_gib: float = Field(default=1.0, gt=0, le=1024)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    # CPU: the cores vLLM's OpenMP threads are bound to (VLLM_CPU_OMP_THREADS_BIND): "auto"
    # (vLLM's choice: all but one core, the other left to the serving processes) or e.g. "0-1"
    cpu_threads_bind: str = Field(default="auto", pattern=r"^(auto|nobind|[0-9,|-]+)$")
    # with "auto": cores kept out of vLLM's binding (VLLM_CPU_NUM_OF_RESERVED_CPU; vLLM's own
    # default is 1, for its HTTP front end). 0: vLLM's threads on every core; measured on 2
    # cores, one stream 16.4 vs 14.9 tok/s, eight streams 78 vs 60 (docs/generation.md)
    cpu_reserved_cores: int = Field(default=0, ge=0, le=1024)
    python_env: Path | None = None


class GenerationSpec(StrictModel):
    engine: Literal["vllm", "builtin"] = "vllm"
    vllm: VllmSpec = VllmSpec()
    max_waiting: int = Field(default=8, ge=0, le=4096)
    max_new_tokens: int = Field(default=512, ge=1, le=32768)
    default_max_new_tokens: int | None = Field(
        default=None, ge=1, le=32768, description="null: 128, or max_new_tokens if smaller"
    )
    max_sequences: int = Field(default=8, ge=1, le=256)
    max_kv_tokens: int = Field(default=8192, ge=2, le=10_000_000)
    cpu_threads: int = Field(default=0, ge=0, le=256)
    # the build's check: the served decode loop (in-flight, batched) against transformers'
    # own greedy generate, token for token, and batched-vs-alone prefill logits
    check_prompts: tuple[str, ...] = DEFAULT_CHECK_PROMPTS
    check_tokens: int = Field(default=8, ge=1, le=256)
    logits_atol: float = Field(default=1e-3, gt=0)
    min_token_agreement: float = Field(default=1.0, ge=0, le=1)

    @field_validator("check_prompts")
    @classmethod
    def _prompts_given(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not p.strip() for p in value):
            raise ValueError("check_prompts must hold at least one non-empty prompt")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GenerationSpec:
        if self.default_max_new_tokens is not None and (
            self.default_max_new_tokens > self.max_new_tokens
        ):
            raise ValueError(
                f"default_max_new_tokens {self.default_max_new_tokens} exceeds max_new_tokens "
                f"{self.max_new_tokens}"
            )
        return self

    @property
    def default_new_tokens(self) -> int:
        """What a request that asks for 0 new tokens gets."""
        if self.default_max_new_tokens is not None:
            return self.default_max_new_tokens
        return min(128, self.max_new_tokens)

    def check_model(self, name: str, target: str, max_length: int, quantize: str) -> None:
        """Rules that involve the enclosing model spec; raises ``ValueError``."""
        if self.engine == "builtin" and target != "cpu":
            raise ValueError(
                f"model {name!r}: the builtin generate engine runs on CPU; use target cpu, "
                f"not {target} (or engine vllm)"
            )
        if target == "onnxruntime":
            raise ValueError(
                f"model {name!r}: task generate runs vLLM; use target cpu (vllm-cpu) or "
                "tensorrt (the GPU target: vllm on CUDA), not onnxruntime"
            )
        if quantize != "none":
            raise ValueError(f"model {name!r}: quantize {quantize} does not apply to generate")
        if self.engine == "builtin" and max_length + self.max_new_tokens > self.max_kv_tokens:
            raise ValueError(
                f"model {name!r}: one request of max_length {max_length} + max_new_tokens "
                f"{self.max_new_tokens} tokens can never fit max_kv_tokens {self.max_kv_tokens}"
            )
