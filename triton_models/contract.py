"""The tensor contract between the gateway and the models lmforge puts into Triton.

Every logical model ``<name>`` in a repository is an ensemble with these inputs and outputs.
The repository builder writes configs that follow it, the python-backend models inside
Triton read and write these tensors, and the gateway's Triton adapter sends and reads them.
This module holds names only: it imports nothing, so any side may use it.

Ensemble ``<name>`` (``max_batch_size > 0``; one batch row per input text):

inputs
  ``TEXT``      TYPE_STRING  dims [1]   UTF-8 text
  ``TRUNCATE``  TYPE_BOOL    dims [1]   true: cut to the model's max length;
                                        false: a longer text fails the request with an
                                        error whose message starts with ``INPUT_TOO_LONG``
outputs, task ``embed``
  ``EMBEDDING`` TYPE_FP32    dims [D]   pooled, L2-normalized
  ``NUM_TOKENS`` TYPE_INT32  dims [1]   tokens the model saw for that row (after truncation)
outputs, task ``classify``
  ``PROBS``     TYPE_FP32    dims [C]   softmax probabilities, label order = ``labels``
  ``NUM_TOKENS`` TYPE_INT32  dims [1]

The ensemble's ``config.pbtxt`` carries string ``parameters`` that describe it:
  ``lmforge_task``        "embed" | "classify"
  ``lmforge_labels``      JSON list of label names (classify)
  ``lmforge_dimension``   output width as a decimal string (embed)
  ``lmforge_max_length``  the tokenizer's max sequence length, decimal string
Labels also ship as ``labels.txt`` (one per line) in the ensemble's folder.
"""

from __future__ import annotations

INPUT_TEXT = "TEXT"
INPUT_TRUNCATE = "TRUNCATE"
OUTPUT_EMBEDDING = "EMBEDDING"
OUTPUT_PROBS = "PROBS"
OUTPUT_NUM_TOKENS = "NUM_TOKENS"

PARAM_TASK = "lmforge_task"
PARAM_LABELS = "lmforge_labels"
PARAM_DIMENSION = "lmforge_dimension"
PARAM_MAX_LENGTH = "lmforge_max_length"

TASK_EMBED = "embed"
TASK_CLASSIFY = "classify"

INPUT_TOO_LONG = "INPUT_TOO_LONG"

# Internal tensors between ``<name>_tokenize`` and ``<name>_encoder``.
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"

TOKENIZE_SUFFIX = "_tokenize"
ENCODER_SUFFIX = "_encoder"
LABELS_FILE = "labels.txt"
