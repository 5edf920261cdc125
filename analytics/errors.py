"""Domain errors raised by the analytics package."""

from __future__ import annotations


class InsufficientDataError(ValueError):
    """Too few observations for the requested computation.

    A ``ValueError`` subclass, so callers that treat every bad input alike still catch it, while
    the dashboard can catch it specifically and show "collecting data: 18 more bars needed".

    Attributes
    ----------
    required : int
        Number of observations the computation needs.
    available : int
        Number of observations it was given.
    """

    def __init__(self, required: int, available: int, what: str = "") -> None:
        self.required = required
        self.available = available
        noun = "observation" if required == 1 else "observations"
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}needs {required} {noun}, got {available} ({required - available} more)")
