"""User errors: bad configs, missing files, wrong names.

Anything the user can fix raises `UserError`; the CLI prints its one-line message to stderr
(`error: <message>`) and exits with code 2, without a traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A problem in the user's input, with a one-line message naming it and the fix."""

    exit_code = 2


def closest(name: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest valid choice, or `""` when none is close."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """The standard error for a name missing from a registry: lists the valid names."""
    choices = sorted(str(c) for c in choices)
    return UserError(f"unknown {kind} '{name}'{closest(name, choices)}; valid: {', '.join(choices)}")
