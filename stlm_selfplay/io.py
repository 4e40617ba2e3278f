"""Atomic file writes: a file is complete or absent, never half-written.

`write_lines_atomic` and `write_text_atomic` write a temp file beside the target, fsync it, then
`os.replace` it over the target (an atomic rename on one file system) and fsync the folder, so
after a crash or power loss the file is the old one or the new one; the temp file is removed if
anything fails on the way. `fsync_tree` puts a whole folder (a checkpoint) on disk.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable


def write_lines_atomic(path: str | Path, lines: Iterable[str]) -> int:
    """Write an iterable of strings (written as given, no newlines added); returns bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # name the file the user asked for, not the temp file
        raise OSError(err.errno, err.strerror, str(path)) from None
    written = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            for line in lines:
                f.write(line)
                written += len(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return written


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    write_lines_atomic(path, [text])


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder, so the renames and new entries in it survive a crash (a no-op where the
    platform cannot open folders, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file in `folder` (recursively), then each folder, deepest first: its contents
    are on disk before anything that relies on them (a checkpoint before older ones are deleted)."""
    folder = Path(folder)
    folders = [folder]
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            folders.append(path)
        elif path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for sub in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(sub)
