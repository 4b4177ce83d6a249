"""``<name>``: a causal LM that streams its completion, inside Triton (python backend, decoupled).

Each request is one prompt (the ``contract.INPUT_*`` generation inputs). ``execute`` checks it,
tokenizes it (with the chat template when asked) and hands it to the decode thread
(:class:`~triton_models.runtime.batch_decoder.BatchDecoder`), which owns the model and decodes
every live request together, new ones joining between steps. Responses go out through each
request's response sender, from a thread of their own (so the decode loop does not wait on
delivery): one per new piece of text, then a last one (flag FINAL) with the
finish reason, the matched stop string and usage. A request that does not fit (too many
sequences, or too many KV-cache tokens) is refused at once with
``contract.GENERATE_CAPACITY``; one the caller cancelled stops between two decode steps.

Config ``parameters``: ``contract.PARAM_*`` (limits, threads, the HF folder). Triton metrics:
``lmforge_generate_active_sequences``, ``..._waiting_sequences``, ``..._reserved_kv_tokens``,
``..._cached_tokens`` (gauges), ``lmforge_generate_tokens`` and ``..._refused`` (counters).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:  # a built repository ships the helpers next to this file
    from lmforge_runtime import contract
    from lmforge_runtime.batch_decoder import BatchDecoder, CapacityError, Job, Limits
    from lmforge_runtime.causal_lm import load_causal_lm
    from lmforge_runtime.generate_metrics import GenerateMetrics
    from lmforge_runtime.generate_request import GenerateModelArgs, RequestError
    from lmforge_runtime.generate_responses import (
        caller_gone,
        error_response,
        generate_response,
        refuse,
    )
    from lmforge_runtime.responder import Responder
    from lmforge_runtime.sequence import Sequence, Step
except ModuleNotFoundError:  # running from the source tree
    from triton_models.runtime import contract
    from triton_models.runtime.batch_decoder import (
        BatchDecoder,
        CapacityError,
        Job,
        Limits,
    )
    from triton_models.runtime.causal_lm import load_causal_lm
    from triton_models.runtime.generate_metrics import GenerateMetrics
    from triton_models.runtime.generate_request import GenerateModelArgs, RequestError
    from triton_models.runtime.generate_responses import (
        caller_gone,
        error_response,
        generate_response,
        refuse,
    )
    from triton_models.runtime.responder import Responder
    from triton_models.runtime.sequence import Sequence, Step

logger = logging.getLogger(__name__)
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class _Sink:
    """One request's response sender, as the decode loop's :class:`Sink`; deliveries go
    through the model's :class:`Responder` thread, in order."""

    def __init__(self, request: Any, sender: Any, input_tokens: int, responder: Responder) -> None:
        self._request = request
        self._sender = sender
        self._input_tokens = input_tokens
        self._responder = responder

    def send(self, step: Step) -> None:
        self._responder.submit(lambda: self._deliver(step))

    def _deliver(self, step: Step) -> None:
        response = generate_response(
            pb_utils,
            step.text,
            step.finish_reason or "",
            step.stop_sequence,
            self._input_tokens,
            step.output_tokens,
        )
        self._sender.send(response, flags=FINAL if step.finished else 0)

    def cancelled(self) -> bool:
        return caller_gone(self._sender, self._request)

    def abandon(self) -> None:
        self._responder.submit(lambda: self._sender.send(flags=FINAL))

    def fail(self, message: str) -> None:
        response = error_response(pb_utils, message, "INTERNAL")
        self._responder.submit(lambda: self._sender.send(response, flags=FINAL))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        read = self.args = GenerateModelArgs.read(pb_utils, args)
        params, folder = read.params, read.folder
        self.max_length = read.max_length
        self.max_new_tokens = read.max_new_tokens
        self.default_max_new_tokens = read.default_max_new_tokens
        limits = Limits(
            max_sequences=int(params[contract.PARAM_MAX_SEQUENCES]),
            max_kv_tokens=int(params[contract.PARAM_MAX_KV_TOKENS]),
        )
        self.lm = load_causal_lm(folder, threads=int(params.get(contract.PARAM_CPU_THREADS, "0")))
        self.metrics = GenerateMetrics(pb_utils, args["model_name"], args["model_version"])
        self.responder = Responder()
        self.decoder = BatchDecoder(
            self.lm.model, limits, pad_id=self.lm.pad_id, on_stats=self.metrics.observe
        )
        self.decoder.start()
        logger.info(
            "generate model %s: max_length %d, max_new_tokens %d, %s",
            args["model_name"],
            self.max_length,
            self.max_new_tokens,
            limits,
        )

    def _job(self, request: Any, sender: Any) -> Job:
        asked, ids = self.args.prompt(pb_utils, request, self.lm.prompts)
        sequence = Sequence(
            request_id=request.request_id() or "",
            prompt_ids=tuple(ids),
            params=asked.params,
            decode=self.lm.decode,
            eos_ids=self.lm.eos_ids,
        )
        return Job(sequence, _Sink(request, sender, len(ids), self.responder))

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                self.decoder.submit(self._job(request, sender))
            except RequestError as exc:
                refuse(pb_utils, sender, str(exc), exc.code)
            except CapacityError as exc:
                self.metrics.refuse()
                refuse(pb_utils, sender, str(exc), "UNAVAILABLE")
            except Exception as exc:  # answer the request whatever went wrong
                logger.exception("generate request failed")
                refuse(pb_utils, sender, f"generation failed: {exc}", "INTERNAL")
        return None

    def finalize(self) -> None:
        self.decoder.stop()
        self.responder.close()
        self.metrics.close()
        logger.info("generate model unloaded")
