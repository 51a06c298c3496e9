"""The error services raise for input that can't be used, with a message per field."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """``errors`` maps each field (or ``""`` for the whole form) to what to fix."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))
        self.errors = errors
