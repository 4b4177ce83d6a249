"""The one cheap token estimate, for decisions made before (or without) tokenizing.

Length rules of the router, the batcher's lengths when the engine tokenizes and the length of
a prompt all use :func:`estimate_tokens`: about :data:`CHARS_PER_TOKEN` characters a token plus
the special tokens a model adds. Exact counts come from the tokenizer where the gateway has it.
"""

from __future__ import annotations

#: characters per token of English text under the WordPiece/BPE vocabularies we serve
CHARS_PER_TOKEN = 4
#: special tokens a model adds around an input ([CLS] ... [SEP])
SPECIAL_TOKENS = 2


def estimate_tokens(text: str, pair: str | None = None) -> int:
    """About how many tokens ``text`` (and its ``pair``, if any) become."""
    return SPECIAL_TOKENS + (len(text) + len(pair or "")) // CHARS_PER_TOKEN
