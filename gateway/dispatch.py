"""From a routed request to Triton: one :class:`DeploymentRunner` per deployment.

A runner owns what one deployment needs on the request path: the backend of its endpoint,
its model's metadata, the model's own tokenizer when the gateway may tokenize (the same
:class:`~triton_models.runtime.text.TextEncoder` the ``_tokenize`` model runs inside Triton,
so both paths give identical ids) and a :class:`~gateway.batching.Batcher` that coalesces the
inputs of concurrent requests into padded batches of similar length. The
:class:`Dispatcher` keeps one runner per deployment across config reloads: a deployment that
did not change keeps its runner (and queue); one that left is drained and closed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from lmforge_client.status import FieldViolation
from tokenizers import Encoding

from gateway.backend import (
    Backend,
    ClassifyResult,
    EmbedResult,
    FloatArray,
    ModelMetadata,
    ModelTarget,
    Rows,
    TextRows,
    TokenRows,
)
from gateway.batching import Batched, Batcher, BatchingConfig, BatchStats, ItemError
from gateway.config import GatewayConfig
from gateway.errors import BackendError, BackendUnavailable, DeadlineExceeded, InvalidInput
from gateway.routing import Deployment
from gateway.routing_config import Task
from gateway.token_estimate import estimate_tokens
from triton_models.runtime.contract import INPUT_TOO_LONG
from triton_models.runtime.text import InputTooLongError, TextEncoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowInput:
    """One input of one request, as the batcher carries it."""

    index: int  # its position in the caller's request: errors name ``inputs[index]``
    text: str
    pair: str | None
    truncate: bool
    encoding: Encoding | None  # set when the gateway tokenized it
    deadline: float


@dataclass(frozen=True)
class RowOutput:
    values: FloatArray  # one row: probabilities, a score or an embedding
    num_tokens: int
    version: str


@dataclass(frozen=True)
class Answer:
    """One request's outputs from one deployment, in input order."""

    deployment: Deployment
    meta: ModelMetadata
    values: FloatArray  # [n, width]
    num_tokens: tuple[int, ...]
    version: str
    queue_seconds: float
    run_seconds: float
    tokenized_here: bool


BatchObserver = Callable[[Deployment, BatchStats], None]


class DeploymentRunner:
    """Tokenizer, batcher and backend of one deployment."""

    def __init__(
        self,
        deployment: Deployment,
        task: Task,
        backend: Backend,
        batching: BatchingConfig,
        *,
        info_timeout: float,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.deployment = deployment
        self.target = ModelTarget(
            deployment.route, task, deployment.triton_model, deployment.version
        )
        self.backend = backend
        self._batching = batching
        self._info_timeout = info_timeout
        self._on_batch = on_batch
        self._lock = asyncio.Lock()
        self._meta: ModelMetadata | None = None
        self._encoder: TextEncoder | None = None
        self._batcher: Batcher[RowInput, RowOutput] | None = None
        self.in_flight = 0

    @property
    def queued_inputs(self) -> int:
        return 0 if self._batcher is None else self._batcher.queued_inputs

    @property
    def tokenizes_here(self) -> bool:
        return self._encoder is not None

    def update_batching(self, config: BatchingConfig) -> None:
        self._batching = config
        if self._batcher is not None:
            self._batcher.update_config(config)

    async def meta(self) -> ModelMetadata:
        """The model's metadata (prepares the runner on first use)."""
        await self._prepare()
        assert self._meta is not None
        return self._meta

    async def _prepare(self) -> None:
        if self._batcher is not None:
            return
        async with self._lock:
            if self._batcher is not None:
                return
            try:
                async with asyncio.timeout(self._info_timeout):
                    meta = await self.backend.model_info(self.target)
                    spec = None
                    try:
                        spec = await self.backend.tokenizer(self.target)
                    except BackendError as exc:  # the engine still tokenizes; say why
                        logger.warning(
                            "%s/%s: tokenizing in Triton: %s",
                            self.deployment.route,
                            self.deployment.name,
                            exc.message,
                        )
            except TimeoutError:
                raise BackendUnavailable(
                    f"{self.deployment.triton_model!r} on {self.deployment.endpoint!r} did not "
                    f"describe itself within {self._info_timeout} s"
                ) from None
            if spec is not None:
                self._encoder = TextEncoder.from_file(
                    spec.tokenizer_file, spec.max_length, spec.buckets
                )
            max_length = meta.max_length or (spec.max_length if spec else 512)
            try:
                self._batching.check_fits(max_length)
            except ValueError as exc:
                raise BackendError(f"{self.deployment.name}: {exc}") from None
            self._meta = meta
            self._batcher = Batcher(
                f"{self.deployment.route}/{self.deployment.name}",
                self._run_batch,
                self._batching,
                max_length=max_length,
                on_batch=self._observe,
            )
            await self._batcher.start()
            logger.info(
                "%s/%s ready: %s on %s, tokenized %s",
                self.deployment.route,
                self.deployment.name,
                self.deployment.triton_model,
                self.deployment.endpoint,
                "in the gateway" if self._encoder is not None else "in Triton",
            )

    def _observe(self, stats: BatchStats) -> None:
        if self._on_batch is not None:
            self._on_batch(self.deployment, stats)

    def _rows(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None,
        truncate: Sequence[bool],
        deadline: float,
    ) -> tuple[list[RowInput], list[int]]:
        max_length = self._meta.max_length if self._meta and self._meta.max_length else 512
        if self._encoder is None:
            rows = [
                RowInput(i, t, None if pairs is None else pairs[i], truncate[i], None, deadline)
                for i, t in enumerate(texts)
            ]
            estimates = [min(max_length, estimate_tokens(r.text, r.pair)) for r in rows]
            return rows, estimates
        encodings = self._encoder.encode(texts, pairs)
        try:
            self._encoder.check_lengths(texts, encodings, truncate, pairs)
        except InputTooLongError as exc:
            raise InvalidInput.from_violations(
                FieldViolation(
                    f"inputs[{row}]",
                    f"{INPUT_TOO_LONG}: {n} tokens, more than the model's max_length "
                    f"{exc.max_length}",
                )
                for row, n in sorted(exc.rows.items())
            ) from None
        rows = [
            RowInput(i, t, None if pairs is None else pairs[i], truncate[i], encodings[i], deadline)
            for i, t in enumerate(texts)
        ]
        return rows, [len(e.ids) for e in encodings]

    async def _run_batch(self, batch: Sequence[RowInput]) -> list[RowOutput | ItemError]:
        """Run a batch; an input the engine refuses (too long) fails only its own caller: the
        engine names the row, the others run again without it."""
        try:
            return list(await self._run_rows(batch))
        except InvalidInput as exc:
            bad = _rows_named(exc, len(batch))
            if not bad:
                raise
        done: dict[int, RowOutput | ItemError] = {
            i: ItemError(
                InvalidInput.from_violations([FieldViolation(f"inputs[{batch[i].index}]", why)])
            )
            for i, why in bad.items()
        }
        rest = [i for i in range(len(batch)) if i not in bad]
        if rest:
            again = await self._run_batch([batch[i] for i in rest])
            done.update(zip(rest, again, strict=True))
        return [done[i] for i in range(len(batch))]

    async def _run_rows(self, batch: Sequence[RowInput]) -> list[RowOutput]:
        rows: Rows
        if self._encoder is not None and all(r.encoding is not None for r in batch):
            encodings = [r.encoding for r in batch if r.encoding is not None]
            rows = TokenRows(self._encoder.batch(encodings))
        else:
            pairs = [r.pair for r in batch]
            rows = TextRows(
                tuple(r.text for r in batch),
                tuple(r.truncate for r in batch),
                None if all(p is None for p in pairs) else tuple(p or "" for p in pairs),
            )
        timeout = max(r.deadline for r in batch) - time.monotonic()
        if timeout <= 0:
            raise DeadlineExceeded("the batch's deadline passed before it was sent")
        result: ClassifyResult | EmbedResult
        if self.target.task == "classify":
            result = await self.backend.classify(self.target, rows, timeout=timeout)
            values = result.probs
        else:
            result = await self.backend.embed(self.target, rows, timeout=timeout)
            values = result.vectors
        if values.shape[0] != len(batch) or len(result.num_tokens) != len(batch):
            # the one check of what a backend returns against what it was sent
            raise BackendError(
                f"{self.deployment.triton_model!r} returned {values.shape[0]} rows "
                f"for {len(batch)} inputs"
            )
        return [
            RowOutput(values[i], result.num_tokens[i], result.version) for i in range(len(batch))
        ]

    async def run(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None,
        truncate: Sequence[bool],
        deadline: float,
    ) -> Answer:
        """Every input through the batcher; results in input order."""
        self.in_flight += 1
        try:
            await self._prepare()
            assert self._batcher is not None and self._meta is not None
            self._batcher.admit(len(texts))  # refuse before tokenizing: rejections stay cheap
            rows, lengths = self._rows(texts, pairs, truncate, deadline)
            batched: Batched[RowOutput] = await self._batcher.submit(
                rows, lengths, deadline=deadline
            )
        finally:
            self.in_flight -= 1
        outputs = batched.results
        values: FloatArray = np.stack([o.values for o in outputs]).astype(np.float32)
        return Answer(
            deployment=self.deployment,
            meta=self._meta,
            values=values,
            num_tokens=tuple(o.num_tokens for o in outputs),
            version=outputs[0].version,
            queue_seconds=batched.queue_seconds,
            run_seconds=batched.run_seconds,
            tokenized_here=self._encoder is not None,
        )

    async def close(self, drain_timeout: float = 0.0) -> None:
        """Let queued and running work finish (up to ``drain_timeout`` s), then stop."""
        deadline = time.monotonic() + drain_timeout
        while (self.in_flight or self.queued_inputs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._batcher is not None:
            await self._batcher.close()


_ROW_FIELD = re.compile(r"^inputs\[(\d+)\]$")


def _rows_named(error: InvalidInput, rows: int) -> dict[int, str]:
    """The batch rows an engine's invalid-input error names (``inputs[k]``), with why."""
    named: dict[int, str] = {}
    for violation in error.violations:
        found = _ROW_FIELD.match(violation.field)
        if found is None or int(found.group(1)) >= rows:
            return {}
        named[int(found.group(1))] = violation.description
    return named


RunnerKey = tuple[str, str, str, str, int | None]


def runner_key(deployment: Deployment) -> RunnerKey:
    d = deployment
    return (d.route, d.name, d.endpoint, d.triton_model, d.version)


class Dispatcher:
    """One runner per deployment of the current config, over one backend per endpoint."""

    def __init__(
        self,
        config: GatewayConfig,
        backends: Mapping[str, Backend],
        *,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self._backends = dict(backends)
        self._on_batch = on_batch
        self._runners: dict[RunnerKey, DeploymentRunner] = {}
        self._config = config
        self._build(config)

    @property
    def backends(self) -> Mapping[str, Backend]:
        return self._backends

    def _build(self, config: GatewayConfig) -> list[DeploymentRunner]:
        """Make runners for ``config``; returns the ones no longer used."""
        fresh: dict[RunnerKey, DeploymentRunner] = {}
        for route in config.models:
            batching = config.batching_for(route)
            for d in route.deployment_configs:
                deployment = Deployment(route.name, d.name, d.endpoint, d.triton_model, d.version)
                key = runner_key(deployment)
                runner = self._runners.get(key)
                if runner is None or runner.target.task != route.task:
                    runner = DeploymentRunner(
                        deployment,
                        route.task,
                        self._backends[d.endpoint],
                        batching,
                        info_timeout=config.triton.connect_timeout_s,
                        on_batch=self._on_batch,
                    )
                else:
                    runner.update_batching(batching)
                fresh[key] = runner
        retired = [r for k, r in self._runners.items() if fresh.get(k) is not r]
        self._runners = fresh
        self._config = config
        return retired

    def reconfigure(
        self, config: GatewayConfig, backends: Mapping[str, Backend]
    ) -> list[DeploymentRunner]:
        """Swap in ``config`` (with its endpoints' backends); returns retired runners, which
        the caller drains and closes once in-flight requests are done."""
        self._backends = dict(backends)
        return self._build(config)

    def runner(self, deployment: Deployment) -> DeploymentRunner:
        runner = self._runners.get(runner_key(deployment))
        if runner is None:  # a plan from the previous table during a reload
            raise BackendError(f"deployment {deployment.route}/{deployment.name} is gone")
        return runner

    def runners(self) -> list[DeploymentRunner]:
        return list(self._runners.values())

    async def close(self, drain_timeout: float = 0.0) -> None:
        await asyncio.gather(*(r.close(drain_timeout) for r in self._runners.values()))
