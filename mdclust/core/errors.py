"""Exceptions that the CLI turns into a one-line message and an exit code.

Every error mdclust raises on purpose is a ``MdclustError``; the subclasses let Python callers
tell the cases apart, and carry the same one-line message the CLI prints."""


class MdclustError(Exception):
    """Bad input or a failed dependency: exit code 2."""

    exit_code = 2


class BadInput(MdclustError, ValueError):
    """An argument has a wrong value or type (--k 0, an unknown method, a bad name)."""


class MissingStage(MdclustError, LookupError):
    """An earlier stage's output is not in the store; the message names the command to run."""


class StaleResult(MdclustError):
    """A stored result was made from images that have changed since; rerun its stage."""


class QualityGateFailed(MdclustError):
    """A requested quality threshold was not met: exit code 1. ``details`` is the measurement,
    which the CLI still prints under --json."""

    exit_code = 1

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


class MissingDataFile(MdclustError):
    """A group's data file (in the store's .data folder) is not there: deleted, or the entry
    file was copied without it. ``group`` and ``file`` name them."""

    def __init__(self, message: str, group: str = "", file: str = ""):
        super().__init__(message)
        self.group, self.file = group, file
