"""User-facing errors.

An :class:`EdgecError` is a mistake in what the user gave us (a model, a cluster
file, a flag). The CLI prints its one-line message and exits with code 2; any
other exception is a bug and keeps its traceback. Python 3.6 syntax: the
board runtime raises it.
"""

from typing import Optional


class EdgecError(Exception):
    """A user error: one line saying what, where, and what to do."""

    def __init__(self, message: str, *, where: Optional[str] = None) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)
