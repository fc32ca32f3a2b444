"""Errors a user can cause: each is shown as one paragraph and exits with code 2."""

from __future__ import annotations


class InputError(ValueError):
    """Base of every bad-input error (scenario, flag, data file, run directory)."""


class DataError(InputError):
    """A data file is missing or has the wrong layout."""
