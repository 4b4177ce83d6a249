"""The errors of a rollout: one that cannot start, and one that must be rolled back."""

from __future__ import annotations


class RolloutError(RuntimeError):
    """The plan cannot be carried out (nothing was changed, or the rollback also failed)."""


class RolloutFailed(RuntimeError):
    """A rollout that must be rolled back: a failed check or warm-up, or an interruption."""


class Interrupted(RolloutFailed):
    """SIGINT/SIGTERM or ``lmforge rollout --rollback`` during a rollout."""
