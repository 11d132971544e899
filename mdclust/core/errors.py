"""Exceptions that the CLI turns into a one-line message and an exit code."""


class MdclustError(Exception):
    """Bad input or a failed dependency: exit code 2."""

    exit_code = 2


class QualityGateFailed(MdclustError):
    """A requested quality threshold was not met: exit code 1. ``details`` is the measurement,
    which the CLI still prints under --json."""

    exit_code = 1

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}
