"""In-flight batching of causal-LM decoding: one thread owns the model and decodes every live
sequence together, one token per sequence per step.

Sequences join the running batch between steps and leave it as soon as they finish or their
caller goes away. The batch keeps one KV cache for all of its rows, left-padded to a common
width (:mod:`triton_models.runtime.kv_batch`): new sequences are prefilled together, then
their cache rows are merged in; finished ones are cut out and the padding columns nobody needs
any more are trimmed. A request's first token comes from its prefill, so it does not wait for
a decode step.

Cancellation is checked between steps, at most every ``cancel_check_s`` seconds; a sequence whose
caller went away leaves the batch at that step.

Admission is bounded twice: by sequences (running + waiting) and by KV-cache tokens, counting
for each sequence what it may grow to (prompt + ``max_new_tokens``). Beyond either bound
:meth:`BatchDecoder.submit` raises :class:`CapacityError` at once; nothing queues.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from . import contract
from .kv_batch import KVBatch, prefill_inputs
from .sequence import Sequence, Step

logger = logging.getLogger(__name__)


class Sink(Protocol):
    """Where one sequence's results go (a Triton response sender, or a test's list)."""

    def send(self, step: Step) -> None:
        """One piece of text; the last step (``step.finished``) ends the response stream."""

    def cancelled(self) -> bool:
        """Whether the caller went away (checked between steps)."""

    def abandon(self) -> None:
        """Close the stream without a result: the caller is gone."""

    def fail(self, message: str) -> None:
        """Close the stream with an error."""


class CapacityError(RuntimeError):
    """The decoder is full; the message carries :data:`contract.GENERATE_CAPACITY`."""


@dataclass(frozen=True)
class Limits:
    max_sequences: int
    max_kv_tokens: int

    def __post_init__(self) -> None:
        if self.max_sequences < 1 or self.max_kv_tokens < 1:
            raise ValueError(f"limits must be positive: {self}")


@dataclass(eq=False)
class Job:
    sequence: Sequence
    sink: Sink
    submitted: float = 0.0


@dataclass(frozen=True)
class Stats:
    """A snapshot for metrics, taken after every step."""

    running: int
    waiting: int
    reserved_kv_tokens: int
    cached_tokens: int  # real (unpadded) tokens in the running batch's cache
    generated: int  # tokens produced by the last step (prefill + decode)


StatsCallback = Callable[[Stats], None]


class BatchDecoder:
    """Owns ``model`` (an HF causal LM in eval mode); :meth:`start` runs the decode thread,
    :meth:`run_once` drives it step by step (tests)."""

    def __init__(
        self,
        model: Any,
        limits: Limits,
        *,
        pad_id: int = 0,
        on_stats: StatsCallback | None = None,
        cancel_check_s: float = 0.1,
    ) -> None:
        self.model = model
        self.limits = limits
        self.pad_id = pad_id
        self._on_stats = on_stats
        # asking a Triton response sender whether its caller left is a round trip to the
        # server process: done for every sequence at most this often, not every step
        self._cancel_check_s = cancel_check_s
        self._cancel_checked = float("-inf")
        self._lock = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._reserved = 0
        self._running: list[Job] = []
        self._admitting: list[Job] = []
        self._batch: KVBatch | None = None
        self._next: list[int] = []  # per running row: the sampled token not yet fed back
        self._stopping = False
        self._thread: threading.Thread | None = None
        forward = inspect.signature(model.forward).parameters
        self._keep_last = "logits_to_keep" in forward
        # transformers 5 names the KV cache ``cache``; earlier releases ``past_key_values``
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"

    # -- admission (any thread) -------------------------------------------------------------
    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def reserved_kv_tokens(self) -> int:
        return self._reserved

    def submit(self, job: Job) -> None:
        """Queue ``job`` for the next step, or raise :class:`CapacityError` at once."""
        need = job.sequence.reserved
        if need > self.limits.max_kv_tokens:
            raise ValueError(
                f"a sequence of {need} tokens can never fit max_kv_tokens "
                f"{self.limits.max_kv_tokens}"
            )
        with self._lock:
            if self._stopping:
                raise CapacityError(contract.capacity_message("the model is shutting down"))
            live = len(self._running) + len(self._waiting)
            if live >= self.limits.max_sequences:
                raise CapacityError(
                    contract.capacity_message(
                        f"{live} sequences are being generated, the most this model decodes "
                        f"together ({self.limits.max_sequences})"
                    )
                )
            if self._reserved + need > self.limits.max_kv_tokens:
                raise CapacityError(
                    contract.capacity_message(
                        f"{need} KV-cache tokens (prompt + max_new_tokens) do not fit: "
                        f"{self._reserved} of {self.limits.max_kv_tokens} are reserved"
                    )
                )
            self._reserved += need
            job.submitted = time.monotonic()
            self._waiting.append(job)
            self._lock.notify()

    # -- the thread -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the decoder is already running")
        self._thread = threading.Thread(target=self._loop, name="lmforge-decode", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; sequences still live end with finish reason ``cancelled``."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for job in [*self._running, *self._drain_waiting()]:
            self._safely(job, lambda j: j.sink.send(j.sequence.cancel()))
        self._running, self._next, self._batch = [], [], None

    def _drain_waiting(self) -> list[Job]:
        with self._lock:
            jobs = list(self._waiting)
            self._waiting.clear()
            return jobs

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._waiting and not self._running:
                    self._lock.wait()
                if self._stopping:
                    return
            try:
                self.run_once()
            except Exception:  # a failed step fails its sequences, never the thread
                logger.exception("decode step failed")
                self._fail_all("generation failed inside the model; see the server log")

    # -- one step ---------------------------------------------------------------------------
    @torch.inference_mode()
    def run_once(self) -> Stats:
        """Drop cancelled sequences, prefill the waiting ones, then decode one token for
        every running sequence. Returns what the batch looks like afterwards."""
        self._drop_cancelled()
        generated = self._admit()
        if self._running:
            generated += self._decode()
        stats = Stats(
            running=len(self._running),
            waiting=len(self._waiting),
            reserved_kv_tokens=self._reserved,
            cached_tokens=0 if self._batch is None else self._batch.real_tokens,
            generated=generated,
        )
        if self._on_stats is not None:
            try:
                self._on_stats(stats)
            except Exception:  # metrics must never stop decoding
                logger.exception("recording decode statistics failed")
        return stats

    def run_until_idle(self, max_steps: int = 100_000) -> None:
        """Step until nothing is running or waiting (tests and benchmarks without a thread)."""
        for _ in range(max_steps):
            if not self._running and not self._waiting:
                return
            self.run_once()
        raise RuntimeError(f"still busy after {max_steps} steps")

    def _drop_cancelled(self) -> None:
        now = time.monotonic()
        if now - self._cancel_checked < self._cancel_check_s:
            return
        self._cancel_checked = now
        gone = [i for i, job in enumerate(self._running) if job.sink.cancelled()]
        if gone:
            for i in gone:
                self._safely(self._running[i], lambda j: j.sink.abandon())
            self._remove(gone)
        with self._lock:
            queued = list(self._waiting)
            dropped = [job for job in queued if job.sink.cancelled()]
            if dropped:
                self._waiting = deque(job for job in queued if all(job is not d for d in dropped))
        for job in dropped:
            self._release(job)
            self._safely(job, lambda j: j.sink.abandon())

    def _admit(self) -> int:
        with self._lock:
            jobs = list(self._waiting)
            self._waiting.clear()
        if not jobs:
            return 0
        self._admitting = jobs  # failed along with the batch if the prefill fails
        generated = self._prefill(jobs)
        self._admitting = []
        return generated

    def _prefill(self, jobs: list[Job]) -> int:
        ids, mask, positions = prefill_inputs([j.sequence.prompt_ids for j in jobs], self.pad_id)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keep_last else {}
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **kwargs,
        )
        fresh = KVBatch.from_prefill(getattr(out, self._cache_arg), mask)
        logits = out.logits[:, -1, :]
        tokens = [job.sequence.choose(logits[i]) for i, job in enumerate(jobs)]
        done = [
            i for i, (job, t) in enumerate(zip(jobs, tokens, strict=True)) if self._emit(job, t)
        ]
        keep = [i for i in range(len(jobs)) if i not in done]
        for i in done:
            self._release(jobs[i])
        if keep:
            if len(keep) < len(jobs):
                fresh.select(keep)
            if self._batch is None:
                self._batch = fresh
            else:
                self._batch.merge(fresh)
            self._running.extend(jobs[i] for i in keep)
            self._next.extend(tokens[i] for i in keep)
        return len(jobs)

    def _decode(self) -> int:
        batch = self._batch
        assert batch is not None
        ids = torch.tensor(self._next, dtype=torch.long).unsqueeze(1)
        mask, positions = batch.step_inputs()
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_arg: batch.cache},
        )
        batch.after_step(getattr(out, self._cache_arg))
        logits = out.logits[:, -1, :]
        done = []
        for i, job in enumerate(self._running):
            token = job.sequence.choose(logits[i])
            self._next[i] = token
            if self._emit(job, token):
                done.append(i)
        if done:
            for i in done:
                self._release(self._running[i])
            self._remove(done, released=True)
        return len(ids)

    # -- bookkeeping ------------------------------------------------------------------------
    def _emit(self, job: Job, token: int) -> bool:
        """Accept ``token`` for ``job`` and send what it released; True when it finished."""
        step = job.sequence.accept(token)
        if step.text or step.finished:
            self._safely(job, lambda j: j.sink.send(step))
        return step.finished

    def _remove(self, rows: list[int], *, released: bool = False) -> None:
        drop = set(rows)
        if not released:
            for i in rows:
                self._release(self._running[i])
        keep = [i for i in range(len(self._running)) if i not in drop]
        self._running = [self._running[i] for i in keep]
        self._next = [self._next[i] for i in keep]
        if not keep:
            self._batch = None
        elif self._batch is not None:
            self._batch.select(keep)

    def _release(self, job: Job) -> None:
        with self._lock:
            self._reserved -= job.sequence.reserved

    def _fail_all(self, message: str) -> None:
        jobs = [*self._running, *self._admitting, *self._drain_waiting()]
        self._admitting = []
        for job in jobs:
            self._release(job)
            self._safely(job, lambda j: j.sink.fail(message))
        self._running, self._next, self._batch = [], [], None

    @staticmethod
    def _safely(job: Job, action: Callable[[Job], None]) -> None:
        try:
            action(job)
        except Exception:  # one broken stream must not stop the others
            logger.exception("could not answer request %s", job.sequence.request_id)
