"""Errors that any layer may raise and the command line turns into one line each."""

from __future__ import annotations

__all__ = ["JobFailed"]


class JobFailed(RuntimeError):
    """A job failed for a reason already written as one readable line (e.g. a Ray Train worker's
    error out of Ray's wrappers). The CLI prints it without a traceback and exits 1."""
