"""``<name>_tokenize``: UTF-8 text → padded token ids, inside Triton (python backend).

Inputs ``TEXT`` (string), optionally ``TEXT_PAIR`` (string, pair models) and ``TRUNCATE``
(bool), one row per text. Outputs ``input_ids``, ``attention_mask`` (and ``token_type_ids``
when the encoder takes them) as INT64 ``[rows, L]`` with ``L`` the smallest length bucket
that holds the request's longest row, plus ``NUM_TOKENS`` INT32 ``[rows, 1]``. A row longer
than ``max_length`` with ``TRUNCATE`` false fails its request with
``contract.input_too_long_message`` (which names every such row).

Config ``parameters``: the ``contract.TOKENIZE_*`` names.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:  # a built repository ships the helpers next to this file
    from lmforge_runtime import contract
    from lmforge_runtime.params import string_parameters
    from lmforge_runtime.text import InputTooLongError, TextEncoder, decode_texts
except ModuleNotFoundError:  # running from the source tree
    from triton_models.runtime import contract
    from triton_models.runtime.params import string_parameters
    from triton_models.runtime.text import InputTooLongError, TextEncoder, decode_texts

logger = logging.getLogger(__name__)

Read = tuple[list[str], list[str] | None, list[bool]]


def _error(message: str) -> Any:
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = string_parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        tokenizer_file = version_dir / params.get(contract.TOKENIZE_FILE, contract.TOKENIZER_FILE)
        max_length = int(params[contract.TOKENIZE_MAX_LENGTH])
        buckets = params.get(contract.TOKENIZE_BUCKETS, contract.EXACT_LENGTH)
        self.encoder = TextEncoder.from_file(tokenizer_file, max_length, buckets)
        self.emit_token_type_ids = (
            params.get(contract.TOKENIZE_EMIT_TOKEN_TYPE_IDS, "true").lower() == "true"
        )
        self.default_truncate = (
            params.get(contract.TOKENIZE_DEFAULT_TRUNCATE, "true").lower() == "true"
        )
        self.pairs = any(i["name"] == contract.INPUT_TEXT_PAIR for i in config.get("input", []))
        logger.info(
            "tokenizer %s: max_length=%d buckets=%s pairs=%s",
            tokenizer_file,
            max_length,
            self.encoder.buckets,
            self.pairs,
        )

    def _read(self, request: Any) -> Read:
        texts = decode_texts(
            pb_utils.get_input_tensor_by_name(request, contract.INPUT_TEXT).as_numpy()
        )
        pairs = None
        if self.pairs:
            pairs = decode_texts(
                pb_utils.get_input_tensor_by_name(request, contract.INPUT_TEXT_PAIR).as_numpy()
            )
            if len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(pairs)} {contract.INPUT_TEXT_PAIR}")
        flag = pb_utils.get_input_tensor_by_name(request, contract.INPUT_TRUNCATE)
        if flag is None:
            return texts, pairs, [self.default_truncate] * len(texts)
        values = flag.as_numpy().reshape(-1).astype(bool).tolist()
        if len(values) == 1 and len(texts) > 1:
            values = values * len(texts)
        if len(values) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(values)} TRUNCATE values")
        return texts, pairs, values

    def execute(self, requests: list[Any]) -> list[Any]:
        read: list[Read | str] = []
        for request in requests:
            try:
                read.append(self._read(request))
            except ValueError as exc:
                read.append(str(exc))
        # One tokenizer call for every row of every request (it parallelizes internally).
        good = [item for item in read if not isinstance(item, str)]
        all_texts = [t for texts, _, _ in good for t in texts]
        all_pairs = [p for _, pairs, _ in good for p in (pairs or [])] if self.pairs else None
        encodings = self.encoder.encode(all_texts, all_pairs)
        responses = []
        offset = 0
        for item in read:
            if isinstance(item, str):
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=_error(item)))
                continue
            texts, pairs, truncate = item
            mine = encodings[offset : offset + len(texts)]
            offset += len(texts)
            try:
                self.encoder.check_lengths(texts, mine, truncate, pairs)
            except InputTooLongError as exc:
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[], error=_error(str(exc)))
                )
                continue
            batch = self.encoder.batch(mine)
            outputs = [
                pb_utils.Tensor(contract.INPUT_IDS, batch.input_ids),
                pb_utils.Tensor(contract.ATTENTION_MASK, batch.attention_mask),
                pb_utils.Tensor(contract.OUTPUT_NUM_TOKENS, batch.num_tokens),
            ]
            if self.emit_token_type_ids:
                outputs.append(pb_utils.Tensor(contract.TOKEN_TYPE_IDS, batch.token_type_ids))
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self) -> None:
        logger.info("tokenizer unloaded")
