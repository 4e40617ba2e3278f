"""Atomic file writes: a file is complete or absent, never half-written.

Both functions write a temp file beside the target, then `os.replace` it over the target (an
atomic rename on one file system), removing the temp file if anything fails on the way.
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    written = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            for line in lines:
                f.write(line)
                written += len(line.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    write_lines_atomic(path, [text])
