"""Errors a user can fix: the CLI prints them as one line."""

from __future__ import annotations


class UserError(Exception):
    """Wrong input or settings; the message names the input and the fix."""
