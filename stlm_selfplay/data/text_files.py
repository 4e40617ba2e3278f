"""`text` source: local .txt / .jsonl / .parquet files, a glob, or a folder of them.

A .txt file is one document; each .jsonl line or .parquet row is one document (its
`data.text_field` column). Files are read with `datasets` in streaming mode, so nothing is
written to the Hugging Face cache.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterator

from stlm_selfplay.data.sources import register_source
from stlm_selfplay.errors import UserError, as_user_error

BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def find_files(pattern: str) -> list[Path]:
    """`pattern` (file, glob or folder) -> sorted data files; a `UserError` when none match."""
    if not pattern:
        raise UserError("data.path is empty; set it to a .txt/.jsonl/.parquet file, glob or folder (data.path=FILE)")
    path = Path(pattern).expanduser()
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if p.suffix in BUILDERS and p.is_file()]
    elif path.is_file():
        files = [path]
    else:
        files = [Path(p) for p in sorted(glob.glob(str(path), recursive=True)) if Path(p).is_file()]
    if not files:
        raise UserError(f"data.path '{pattern}' matches no files; check the path (globs and folders are allowed)")
    bad = [p for p in files if p.suffix not in BUILDERS]
    if bad:
        raise UserError(f"data file '{bad[0]}' has an unsupported extension; use {', '.join(BUILDERS)}")
    return files


def _fingerprint(cfg) -> dict:
    """Absolute paths, sizes and mtimes: editing a file rebuilds the cache."""
    return {str(p.resolve()): [p.stat().st_size, p.stat().st_mtime_ns] for p in find_files(cfg.path)}


@register_source("text", keys=("path", "text_field"), fingerprint=_fingerprint)
def text_documents(cfg) -> Iterator[str]:
    import datasets

    for path in find_files(cfg.path):
        builder = BUILDERS[path.suffix]
        kwargs = {"sample_by": "document"} if builder == "text" else {}
        rows = datasets.load_dataset(builder, data_files=[str(path)], split="train", streaming=True, **kwargs)
        field = "text" if builder == "text" else cfg.text_field
        try:
            for row in rows:
                if field not in row:
                    raise UserError(f"'{path}' has no field '{field}' (fields: {', '.join(row)}); set data.text_field")
                if not isinstance(row[field], str):
                    raise UserError(f"'{path}': field '{field}' holds {type(row[field]).__name__}, not text; "
                                    "set data.text_field to a text column")
                yield row[field]
        except UserError:
            raise
        except (OSError, ValueError, TypeError, KeyError) as err:  # binary .txt, malformed .jsonl/.json/.parquet
            raise as_user_error(err, str(path), "data file") or UserError(  # the parser's own ValueError, ...
                f"cannot parse data file '{path}': {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
                "; fix the file (one JSON object per .jsonl line)") from None
        except Exception as err:  # pyarrow / datasets errors
            raise as_user_error(err, str(path), "data file") or err
