"""A local corpus every machine has: the running Python's standard-library sources.

`write_stdlib_corpus(path)` finds the `.py` files under `sysconfig.get_paths()["stdlib"]` at run
time (site-packages, test suites and `__pycache__` left out), writes them as one .jsonl document
per file, the train files first in sorted order and the fixed held-out files (`VAL_FILES`) last,
and returns what it read plus the `val_fraction` that makes the `text` source's `tail` split put
exactly the held-out files in val:

    val_fraction = sum_{f in val} (bytes(f) + 1) / sum_{all f} (bytes(f) + 1)     (+1: each EOS)

so the corpus goes through the ordinary `text` data source (`data.path=<path>`, `split: tail`).
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from pathlib import Path

# Held out for validation: modules present in CPython 3.10-3.13, ~0.35 MB of ordinary library code.
VAL_FILES = ("argparse.py", "calendar.py", "csv.py", "difflib.py", "fractions.py", "heapq.py",
             "json/decoder.py", "json/encoder.py", "shlex.py", "textwrap.py")
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def stdlib_files(root: Path | None = None) -> list[str]:
    """Relative paths (POSIX) of the standard library's .py sources, sorted."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found += [(Path(folder) / f).relative_to(root).as_posix() for f in files if f.endswith(".py")]
    return sorted(found)


def write_stdlib_corpus(path: Path, max_train_files: int = 0, root: Path | None = None) -> dict:
    """Write the corpus .jsonl to `path` (temp file, then rename); return a description of it."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = stdlib_files(root)
    val = [f for f in VAL_FILES if f in files]
    train = [f for f in files if f not in VAL_FILES]
    if max_train_files:
        train = train[:max_train_files]
    ids = {"train": 0, "val": 0}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for split, names in (("train", train), ("val", val)):
            for name in names:
                text = (root / name).read_bytes().decode("utf-8", errors="replace")
                ids[split] += len(text.encode("utf-8")) + 1
                out.write(json.dumps({"text": text}) + "\n")
    tmp.replace(path)
    return {"root": str(root), "python": sys.version.split()[0], "train_files": len(train), "val_files": val,
            "train_bytes": ids["train"] - len(train), "val_bytes": ids["val"] - len(val),
            "val_fraction": ids["val"] / (ids["train"] + ids["val"])}
