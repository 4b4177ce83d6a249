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
        cpu_threads: 0                       # torch intra-op threads; 0: torch decides
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from lmforge_core.strict import StrictModel

DEFAULT_CHECK_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
    "The weather today is",
)


class GenerationSpec(StrictModel):
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
        if target != "cpu":
            raise ValueError(
                f"model {name!r}: task generate runs as a python-backend model; use target "
                f"cpu, not {target}"
            )
        if quantize != "none":
            raise ValueError(f"model {name!r}: quantize {quantize} does not apply to generate")
        if max_length + self.max_new_tokens > self.max_kv_tokens:
            raise ValueError(
                f"model {name!r}: one request of max_length {max_length} + max_new_tokens "
                f"{self.max_new_tokens} tokens can never fit max_kv_tokens {self.max_kv_tokens}"
            )
