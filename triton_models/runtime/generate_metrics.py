"""Triton custom metrics of a generate model, whichever engine decodes: sequences running and
waiting, KV-cache tokens reserved and held, tokens generated, requests refused for capacity.
``pb_utils`` is the python backend's module (absent outside Triton, so it is passed in)."""

from __future__ import annotations

from typing import Any

from .batch_decoder import Stats


class GenerateMetrics:
    """Triton custom metrics of the decode loop (absent on servers without them)."""

    def __init__(self, pb_utils: Any, model: str, version: str) -> None:
        labels = {"model": model, "version": version}
        family = getattr(pb_utils, "MetricFamily", None)
        self.enabled = family is not None
        if family is None:
            return

        self._families: list[Any] = []  # a family must outlive its metrics

        def metric(name: str, description: str, kind: Any) -> Any:
            self._families.append(family(name=name, description=description, kind=kind))
            return self._families[-1].Metric(labels=labels)

        gauge, counter = family.GAUGE, family.COUNTER
        self.active = metric(
            "lmforge_generate_active_sequences", "Sequences in the decode batch", gauge
        )
        self.waiting = metric(
            "lmforge_generate_waiting_sequences", "Sequences admitted, not yet prefilled", gauge
        )
        self.reserved = metric(
            "lmforge_generate_reserved_kv_tokens",
            "KV-cache tokens reserved by admitted sequences (prompt + max_new_tokens)",
            gauge,
        )
        self.cached = metric(
            "lmforge_generate_cached_tokens", "Real tokens held in the batch's KV cache", gauge
        )
        self.tokens = metric("lmforge_generate_tokens", "Tokens generated", counter)
        self.refused = metric(
            "lmforge_generate_refused", "Requests refused because the model was full", counter
        )

    def observe(self, stats: Stats) -> None:
        if not self.enabled:
            return
        self.active.set(float(stats.running))
        self.waiting.set(float(stats.waiting))
        self.reserved.set(float(stats.reserved_kv_tokens))
        self.cached.set(float(stats.cached_tokens))
        if stats.generated:
            self.tokens.increment(float(stats.generated))

    def refuse(self) -> None:
        if self.enabled:
            self.refused.increment(1.0)

    def close(self) -> None:
        """Drop the metrics while the backend can still take them back (from ``finalize``;
        left to the interpreter's exit, their release crashes the stub)."""
        for name in ("active", "waiting", "reserved", "cached", "tokens", "refused"):
            self.__dict__.pop(name, None)
        if self.enabled:
            self._families.clear()
        self.enabled = False
