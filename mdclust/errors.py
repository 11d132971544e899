"""Exceptions that the CLI turns into a one-line message and an exit code."""


class MdclustError(Exception):
    """Bad input or a failed dependency: exit code 2."""

    exit_code = 2


class QualityGateFailed(MdclustError):
    """A requested quality threshold was not met: exit code 1."""

    exit_code = 1
