"""Text → padded token tensors: truncation policy, length buckets, padding.

One definition of "how lmforge tokenizes" for every side: the ``tokenize`` python model
inside Triton, the gateway's own tokenization (when it calls ``<name>_encoder`` directly)
and the builder's parity checks. Requests are padded to the smallest length bucket that
fits their longest row, so requests of similar length share shapes downstream. Pairs (a
second text per row, for cross-encoders) are truncated longest-first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from . import contract

IntArray = npt.NDArray[np.int64]


class InputTooLongError(ValueError):
    """Rows are longer than the model's max length and their caller asked not to truncate;
    ``rows`` maps each such row to its token count."""

    def __init__(self, rows: dict[int, int], max_length: int) -> None:
        self.rows = dict(rows)
        self.max_length = max_length
        super().__init__(contract.input_too_long_message(rows, max_length))


def parse_buckets(value: str | Sequence[int], max_length: int) -> tuple[int, ...]:
    """Sorted, unique bucket lengths; ``max_length`` is always the last bucket. ``"exact"``
    (or no buckets at all) gives ``()``: every batch is padded to its own longest row."""
    if isinstance(value, str) and value.strip() == contract.EXACT_LENGTH:
        return ()
    items = (
        [int(v) for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    )
    if not items:
        return ()
    if any(b < 1 for b in items):
        raise ValueError(f"bucket lengths must be positive, got {items}")
    if any(b > max_length for b in items):
        raise ValueError(f"bucket lengths {items} exceed max_length {max_length}")
    return tuple(sorted({*items, max_length}))


def choose_bucket(longest: int, buckets: Sequence[int]) -> int:
    """The smallest bucket ≥ ``longest`` (buckets sorted ascending); ``longest`` itself when
    there are no buckets (exact-length padding)."""
    if not buckets:
        return longest
    for bucket in buckets:
        if bucket >= longest:
            return bucket
    raise ValueError(f"no bucket holds {longest} tokens (largest is {buckets[-1]})")


@dataclass(frozen=True)
class TokenBatch:
    """One request's tensors, each ``[rows, length]`` (``num_tokens``: ``[rows, 1]``)."""

    input_ids: IntArray
    attention_mask: IntArray
    token_type_ids: IntArray
    num_tokens: npt.NDArray[np.int32]


def pad_rows(
    ids: Sequence[Sequence[int]],
    type_ids: Sequence[Sequence[int]],
    length: int,
    pad_id: int,
) -> TokenBatch:
    """Right-pad token rows to ``length``."""
    rows = len(ids)
    input_ids = np.full((rows, length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((rows, length), dtype=np.int64)
    token_type_ids = np.zeros((rows, length), dtype=np.int64)
    num_tokens = np.zeros((rows, 1), dtype=np.int32)
    for i, (row, types) in enumerate(zip(ids, type_ids, strict=True)):
        n = len(row)
        if n > length:
            raise ValueError(f"row {i} has {n} tokens, longer than the pad length {length}")
        input_ids[i, :n] = row
        attention_mask[i, :n] = 1
        token_type_ids[i, :n] = types
        num_tokens[i, 0] = n
    return TokenBatch(input_ids, attention_mask, token_type_ids, num_tokens)


class TextEncoder:
    """A fast tokenizer with lmforge's truncation and bucketing rules."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, buckets: str | Sequence[int]) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.max_length = max_length
        self.buckets = parse_buckets(buckets, max_length)
        padding: dict[str, Any] | None = tokenizer.padding
        self.pad_id = int(padding["pad_id"]) if padding else 0
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: Path, max_length: int, buckets: str | Sequence[int]) -> TextEncoder:
        return cls(Tokenizer.from_file(str(path)), max_length, buckets)

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[Encoding]:
        """Tokenize (truncated to ``max_length``); ``overflowing`` marks rows that were cut."""
        if pairs is None:
            return list(self._tokenizer.encode_batch(list(texts)))
        if len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pair texts")
        return list(self._tokenizer.encode_batch(list(zip(texts, pairs, strict=True))))

    def untruncated_length(self, text: str, pair: str | None = None) -> int:
        """Token count of ``text`` (and ``pair``) without truncation (for error messages)."""
        self._tokenizer.no_truncation()
        try:
            return len(self._tokenizer.encode(text, pair).ids)
        finally:
            self._tokenizer.enable_truncation(max_length=self.max_length)

    def check_lengths(
        self,
        texts: Sequence[str],
        encodings: Sequence[Encoding],
        truncate: Sequence[bool],
        pairs: Sequence[str] | None = None,
    ) -> None:
        """Raise :class:`InputTooLongError` naming every cut row whose caller forbade cutting."""
        too_long = {
            row: self.untruncated_length(text, None if pairs is None else pairs[row])
            for row, (text, enc, may_cut) in enumerate(zip(texts, encodings, truncate, strict=True))
            if enc.overflowing and not may_cut
        }
        if too_long:
            raise InputTooLongError(too_long, self.max_length)

    def batch(self, encodings: Sequence[Encoding]) -> TokenBatch:
        """Pad one request's rows to the smallest bucket that fits its longest row."""
        longest = max((len(e.ids) for e in encodings), default=1)
        length = choose_bucket(longest, self.buckets)
        return pad_rows(
            [e.ids for e in encodings], [e.type_ids for e in encodings], length, self.pad_id
        )

    def __call__(
        self, texts: Sequence[str], truncate: Sequence[bool], pairs: Sequence[str] | None = None
    ) -> TokenBatch:
        encodings = self.encode(texts, pairs)
        self.check_lengths(texts, encodings, truncate, pairs)
        return self.batch(encodings)


def decode_texts(values: npt.NDArray[Any]) -> list[str]:
    """A Triton ``TYPE_STRING`` tensor ``[rows, 1]`` (bytes objects) → Python strings."""
    out = []
    for item in values.reshape(-1):
        out.append(item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item))
    return out
