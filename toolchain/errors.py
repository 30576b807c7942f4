"""User-facing errors.

An :class:`EdgecError` is a mistake in what the user gave us (a model, a cluster
file, a flag). The CLI prints its one-line message and exits with code 2; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgecError(Exception):
    """A user error: one line saying what, where, and what to do."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)
