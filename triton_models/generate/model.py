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
    from lmforge_runtime.batch_decoder import BatchDecoder, CapacityError, Job, Limits, Stats
    from lmforge_runtime.causal_lm import PromptError, load_causal_lm
    from lmforge_runtime.params import string_parameters
    from lmforge_runtime.responder import Responder
    from lmforge_runtime.sampling import SamplingParams, parameter_problems
    from lmforge_runtime.sequence import Sequence, Step
    from lmforge_runtime.text import InputTooLongError, decode_texts
except ModuleNotFoundError:  # running from the source tree
    from triton_models.runtime import contract
    from triton_models.runtime.batch_decoder import (
        BatchDecoder,
        CapacityError,
        Job,
        Limits,
        Stats,
    )
    from triton_models.runtime.causal_lm import PromptError, load_causal_lm
    from triton_models.runtime.params import string_parameters
    from triton_models.runtime.responder import Responder
    from triton_models.runtime.sampling import SamplingParams, parameter_problems
    from triton_models.runtime.sequence import Sequence, Step
    from triton_models.runtime.text import InputTooLongError, decode_texts

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


class _Refused(ValueError):
    def __init__(self, message: str, code: str = "INVALID_ARG") -> None:
        super().__init__(message)
        self.code = code


def _scalar(request: Any, name: str, default: Any) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise _Refused(
            contract.invalid_parameter_message(name, f"needs one value, got {values.size}")
        )
    return values[0].item()


class _Metrics:
    """Triton custom metrics of the decode loop (absent on servers without them)."""

    def __init__(self, model: str, version: str) -> None:
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
        self.metrics = _Metrics(args["model_name"], args["model_version"])
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

    def _params(self, request: Any) -> SamplingParams:
        stop_tensor = pb_utils.get_input_tensor_by_name(request, contract.INPUT_STOP)
        stops = () if stop_tensor is None else tuple(decode_texts(stop_tensor.as_numpy()))
        seed = _scalar(request, contract.INPUT_SEED, None)
        params = SamplingParams(
            max_new_tokens=int(_scalar(request, contract.INPUT_MAX_NEW_TOKENS, 0))
            or self.default_max_new_tokens,
            temperature=float(_scalar(request, contract.INPUT_TEMPERATURE, 0.0)),
            top_p=float(_scalar(request, contract.INPUT_TOP_P, 0.0)),
            top_k=int(_scalar(request, contract.INPUT_TOP_K, 0)),
            repetition_penalty=float(_scalar(request, contract.INPUT_REPETITION_PENALTY, 0.0)),
            seed=None if seed is None else int(seed),
            stop=stops,
        )
        problems = parameter_problems(params, self.max_new_tokens)
        if problems:
            name, why = next(iter(problems.items()))
            raise _Refused(contract.invalid_parameter_message(name, why))
        return params

    def _job(self, request: Any, sender: Any) -> Job:
        prompt_tensor = pb_utils.get_input_tensor_by_name(request, contract.INPUT_PROMPT)
        prompts = decode_texts(prompt_tensor.as_numpy())
        if len(prompts) != 1:
            raise _Refused(
                contract.invalid_parameter_message(
                    contract.INPUT_PROMPT, f"needs one text, got {len(prompts)}"
                )
            )
        params = self._params(request)
        try:
            ids = self.lm.encode(
                prompts[0],
                use_chat_template=bool(_scalar(request, contract.INPUT_USE_CHAT_TEMPLATE, False)),
                max_length=self.max_length,
                truncate=bool(_scalar(request, contract.INPUT_TRUNCATE, True)),
            )
        except InputTooLongError as exc:
            raise _Refused(str(exc)) from None
        except PromptError as exc:
            raise _Refused(contract.invalid_parameter_message(exc.name, str(exc))) from None
        sequence = Sequence(
            request_id=request.request_id() or "",
            prompt_ids=tuple(ids),
            params=params,
            decode=self.lm.decode,
            eos_ids=self.lm.eos_ids,
        )
        return Job(sequence, _Sink(request, sender, len(ids), self.responder))

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                self.decoder.submit(self._job(request, sender))
            except _Refused as exc:
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
        logger.info("generate model unloaded")
