"""Incremental detokenization: token ids in, text pieces out, never half a character.

Byte-level BPE (GPT-2, Llama 3, SmolLM) and byte-fallback tokenizers split multi-byte UTF-8
characters over several tokens; decoding the tokens seen so far then ends in U+FFFD until the
character is complete. :class:`IncrementalDecoder` decodes a short window of recent tokens
twice — up to the last emitted token and up to the newest — and emits the difference only when
it does not end in an incomplete character. Decoding a window rather than single tokens keeps
what tokenizers do at a word's start (SentencePiece's leading space, WordPiece's ``##``) the
same as when the whole sequence is decoded. Everything held back is given out by
:meth:`IncrementalDecoder.flush` when the sequence ends.

Pure: the tokenizer is a ``decode(ids) -> str`` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]
REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Turns one sequence's new tokens into text pieces.

    ``context`` are ids that precede the generated ones (the prompt's last tokens): they are
    decoded for context only, never emitted, so the first generated word is spaced as it
    would be in the middle of a text.
    """

    def __init__(self, decode: Decode, context: Sequence[int] = ()) -> None:
        self._decode = decode
        self._ids: list[int] = list(context)
        self._prefix = 0  # start of the decode window
        self._read = len(self._ids)  # ids before this were emitted (or are context)

    @property
    def pending(self) -> int:
        """Tokens received but not yet turned into text."""
        return len(self._ids) - self._read

    def push(self, token: int) -> str:
        """Add one token; returns the text it completes ("" while a character is split)."""
        self._ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held back (the sequence ended), even an invalid byte sequence."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        window = self._ids[self._prefix :]
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(window)
        if not final and (len(after) <= len(before) or after.endswith(REPLACEMENT)):
            return ""
        # ``after`` extends ``before``; where a decoder rewrites earlier text (clean-up of a
        # space before punctuation) only the new tail is given out, as if it had not
        piece = after[len(before) :]
        self._prefix = self._read
        self._read = len(self._ids)
        return piece
