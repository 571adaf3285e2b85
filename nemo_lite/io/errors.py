"""The errors and warnings of saving and loading a run's context (kept import-free)."""

from __future__ import annotations


class ContextError(ValueError):
    """A saved context cannot be read, or names something that may not be imported."""


class ContextWarning(UserWarning):
    """A saved context loaded, but part of it was skipped (e.g. a field the code no longer has)."""
