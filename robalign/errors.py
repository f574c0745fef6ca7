"""Errors robalign raises on bad input.

Every error says what was wrong and what is allowed, so a user can fix the call without
reading the source. They subclass ``ValueError`` so callers that already catch bad input
keep working.
"""

from __future__ import annotations


class RobalignError(ValueError):
    """Base class for every error robalign raises on bad input or bad state."""


class UnknownNameError(RobalignError):
    """A name (env, mode, objective, policy, ...) that is not registered."""

    def __init__(self, kind: str, name: object, choices: list[str]):
        self.kind, self.name, self.choices = kind, name, list(choices)
        super().__init__(f"unknown {kind} {name!r}; valid choices: {', '.join(self.choices) or '(none)'}")


class OutputDirError(RobalignError):
    """An output directory that cannot be written, or would overwrite a finished run."""
