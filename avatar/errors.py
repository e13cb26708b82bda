"""The one base class of errors caused by bad input (files, images, audio, settings)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input; the message names the input and the fix."""
