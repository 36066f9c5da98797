"""The one error type a run can fail with, and the exit codes the CLI maps it to.

Per-file problems are never exceptions that cross a module boundary: they are `Failure` records.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    LOCKED = 3  # another ndup run holds the cache's lock
    OVER_LIMIT = 4  # apply would act on more files than --max-delete allows; nothing was touched
    INCOMPLETE = 5  # apply or undo finished, but some files could not be acted on (each said why)
    DUPLICATES_FOUND = 10  # only with --exit-code
    INTERRUPTED = 130


class NdupError(Exception):
    """A run-level failure: printed as `ndup: error: MESSAGE (hint: HINT)` and mapped to an exit code."""

    def __init__(self, message: str, hint: str | None = None, exit_code: ExitCode = ExitCode.ERROR):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"
