"""The job's own errors: what a user can fix, as opposed to bugs."""

from __future__ import annotations


class PreflightError(ValueError):
    """A problem with the job's options, inputs or output, found before any work is done."""


class NoExamplesError(RuntimeError):
    """The job ran, but every input was rejected: nothing was published."""

    user_error = True  # the user's inputs: one line, exit 1 (dlss_dist.cli.is_user_error)
