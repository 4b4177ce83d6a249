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

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:  # a built repository ships the helpers next to this file
    from lmforge_runtime import contract
    from lmforge_runtime.batch_decoder import BatchDecoder, CapacityError, Job, Limits
    from lmforge_runtime.causal_lm import load_causal_lm
    from lmforge_runtime.generate_metrics import GenerateMetrics
    from lmforge_runtime.generate_request import RequestError, prompt_ids, read_request
    from lmforge_runtime.params import string_parameters
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
    from triton_models.runtime.generate_request import RequestError, prompt_ids, read_request
    from triton_models.runtime.params import string_parameters
    from triton_models.runtime.responder import Responder
    from triton_models.runtime.sequence import Sequence, Step

logger = logging.getLogger(__name__)
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _error(message: str, code_name: str) -> Any:
    code = getattr(pb_utils.TritonError, code_name, None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def _strings(*values: str) -> np.ndarray[Any, Any]:
    return np.array([v.encode("utf-8") for v in values], dtype=np.object_)


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
        tensors = [
            pb_utils.Tensor(contract.OUTPUT_TEXT, _strings(step.text)),
            pb_utils.Tensor(contract.OUTPUT_FINISH_REASON, _strings(step.finish_reason or "")),
            pb_utils.Tensor(contract.OUTPUT_STOP_SEQUENCE, _strings(step.stop_sequence)),
            pb_utils.Tensor(
                contract.OUTPUT_INPUT_TOKENS, np.array([self._input_tokens], dtype=np.int32)
            ),
            pb_utils.Tensor(
                contract.OUTPUT_OUTPUT_TOKENS, np.array([step.output_tokens], dtype=np.int32)
            ),
        ]
        response = pb_utils.InferenceResponse(output_tensors=tensors)
        self._sender.send(response, flags=FINAL if step.finished else 0)

    def cancelled(self) -> bool:
        checks = (self._sender, self._request)
        return any(bool(getattr(o, "is_cancelled", lambda: False)()) for o in checks)

    def abandon(self) -> None:
        self._responder.submit(lambda: self._sender.send(flags=FINAL))

    def fail(self, message: str) -> None:
        error = _error(message, "INTERNAL")
        response = pb_utils.InferenceResponse(output_tensors=[], error=error)
        self._responder.submit(lambda: self._sender.send(response, flags=FINAL))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                f"{config['name']} must be decoupled (model_transaction_policy {{ decoupled: true }})"
            )
        params = string_parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        folder = version_dir / params.get(contract.PARAM_MODEL_DIR, contract.GENERATE_MODEL_DIR)
        self.max_length = int(params[contract.PARAM_MAX_LENGTH])
        self.max_new_tokens = int(params[contract.PARAM_MAX_NEW_TOKENS])
        self.default_max_new_tokens = int(params[contract.PARAM_DEFAULT_MAX_NEW_TOKENS])
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
        def get(name: str) -> Any:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        asked = read_request(
            get,
            max_new_tokens=self.max_new_tokens,
            default_max_new_tokens=self.default_max_new_tokens,
        )
        ids = prompt_ids(asked, self.lm, self.max_length)
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
                self._refuse(sender, str(exc), exc.code)
            except CapacityError as exc:
                self.metrics.refuse()
                self._refuse(sender, str(exc), "UNAVAILABLE")
            except Exception as exc:  # answer the request whatever went wrong
                logger.exception("generate request failed")
                self._refuse(sender, f"generation failed: {exc}", "INTERNAL")
        return None

    @staticmethod
    def _refuse(sender: Any, message: str, code: str) -> None:
        response = pb_utils.InferenceResponse(output_tensors=[], error=_error(message, code))
        sender.send(response, flags=FINAL)

    def finalize(self) -> None:
        self.decoder.stop()
        self.responder.close()
        self.metrics.close()
        logger.info("generate model unloaded")
