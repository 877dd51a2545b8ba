"""The one base class of user-facing errors.

Every entry point (run.py, animate.py, reconstruction.py, evaluation, dataset
preparation, export, the web page) catches `UserError` and prints its one-line
message; nothing else is caught, so a bug of ours keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input a user can fix: the message is one line and names what to change."""


def one_line(text: object, limit: int = 300) -> str:
    """The first non-empty line of `text`, stripped and cut to `limit` characters."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""
