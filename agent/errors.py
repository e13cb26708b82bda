"""Errors a user can fix: the CLI prints them as one line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class UserError(Exception):
    """Wrong input or settings; the message names the input and the fix."""


@contextlib.contextmanager
def exit_on_user_error(command: str) -> Iterator[None]:
    """For code that runs outside ``dystream``'s own ``main`` (a module livekit-agents imports): a setting or an input
    the user can fix ends the process as ``dystream`` does, with one line naming it (``command`` says which worker)
    and status 2."""
    from livekit.plugins.dystream import DyStreamException

    from avatar.errors import InputError

    try:
        yield
    except (DyStreamException, UserError, InputError) as exc:
        print(f"dystream {command}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
