"""Stop strings matched on decoded text, with hold-back.

Text that could still turn into a stop string is not released until it is resolved: when the
newest text ends with the first characters of a stop string, those characters wait for the
next piece. A matched stop string and everything after it are dropped. So no prefix of a stop
string that later completes is ever streamed, and the streamed pieces add up to the final
text exactly.

Pure: text in, text out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopResult:
    """What may be released now, and the stop string found (None while generation goes on)."""

    text: str
    matched: str | None = None


def _held_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        self.stops = tuple(dict.fromkeys(stops))
        self._pending = ""

    @property
    def held(self) -> str:
        """Text held back because it may still become a stop string."""
        return self._pending

    def feed(self, text: str) -> StopResult:
        """Add newly decoded text. Returns the text that is safe to release and, once a stop
        string appears, that string (the text before it is released, the rest dropped)."""
        if not self.stops:
            return StopResult(text)
        pending = self._pending + text
        found: tuple[int, int, str] | None = None  # (start, -length, stop): earliest, longest
        for stop in self.stops:
            at = pending.find(stop)
            if at >= 0 and (found is None or (at, -len(stop)) < found[:2]):
                found = (at, -len(stop), stop)
        if found is not None:
            self._pending = ""
            return StopResult(pending[: found[0]], found[2])
        keep = _held_length(pending, self.stops)
        self._pending = pending[len(pending) - keep :] if keep else ""
        return StopResult(pending[: len(pending) - keep])

    def flush(self) -> str:
        """The held text, released because the sequence ended without a stop string."""
        held, self._pending = self._pending, ""
        return held
