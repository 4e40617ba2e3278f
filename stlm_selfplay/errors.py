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
    return UserError(f"unknown {kind} '{shorten(name)}'{closest(name, choices)}; valid: {', '.join(choices)}")


def shorten(text, limit: int = 60) -> str:
    """`text` as str, cut to `limit` characters with the full length noted (a 5,000-character
    name stays a readable one-line message)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def as_user_error(err: BaseException, source: str | None = None, kind: str = "") -> UserError | None:
    """The one-line `UserError` for an exception that bad input causes, or None for anything else
    (a bug, which keeps its traceback). `source` names what was being read when the exception
    does not (a data file, standard input), `kind` what it is ("data file"). `cli.main` sends every exception through here; readers
    that know the file (e.g. the text data source) call it with `source`.

    OSError (a path that cannot be read or written, a name too long) -> the path and the fix;
    UnicodeError (non-UTF-8 input) -> where and how to convert; JSON / YAML / pyarrow / datasets
    parse errors -> the file and the parser's first line."""
    import errno
    import json

    if isinstance(err, UserError):
        return err
    where = f"{kind} '{shorten(source, 200)}'".strip() if source else kind or "the input"
    if isinstance(err, OSError) and not isinstance(err, (ConnectionError, TimeoutError)):
        path = err.filename if err.filename is not None else source
        name = f"'{shorten(path, 200)}'" if path is not None else "a file"
        if err.errno == errno.ENAMETOOLONG:
            return UserError(f"name too long for the file system: {name}; use a shorter path, name or run.name")
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return UserError(f"permission denied: {name}; pick a folder you can write to (e.g. --out or run.out_dir) "
                             "or fix its permissions")
        if err.errno == errno.ENOENT:
            return UserError(f"no such file or folder: {name}; check the path (its folder must exist)")
        if err.errno == errno.ENOSPC:
            return UserError(f"no space left on the device writing {name}; free disk space or pick another folder")
        if err.errno in (errno.EISDIR, errno.ENOTDIR):
            return UserError(f"{name}: {err.strerror.lower()}; pass a file path where a file is expected")
        if err.strerror:
            return UserError(f"cannot use {name}: {err.strerror}; check the path")
        return None
    if isinstance(err, UnicodeDecodeError):
        return UserError(f"{where} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                         "pass UTF-8 text (convert it, e.g. iconv -f latin1 -t utf-8 FILE)")
    if isinstance(err, UnicodeError):
        return UserError(f"cannot encode text for {where}: {shorten(err, 120)}; run with PYTHONIOENCODING=utf-8")
    if isinstance(err, json.JSONDecodeError):
        return UserError(f"{where} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                         "fix or remove that line")
    module = type(err).__module__ or ""
    if module.startswith(("yaml", "pyarrow", "datasets")):
        cause = err.__cause__ or err.__context__
        if module.startswith("datasets") and cause is not None and cause is not err:  # the parser's own error
            return as_user_error(cause, source, kind) or UserError(f"cannot parse {where}: {_first_line(cause)}")
        fix = "fix its YAML" if module.startswith("yaml") else "fix the file (one JSON object per .jsonl line)"
        return UserError(f"cannot parse {where}: {_first_line(err)}; {fix}")
    return None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return shorten(lines[0] if lines else type(err).__name__, 160)
