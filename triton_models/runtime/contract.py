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
