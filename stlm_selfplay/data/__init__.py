"""Text data: sources (a registry of document iterators), the byte-shard cache, packing, loading.

The plugins: each module below registers one source (a new source is one line here).
"""

from stlm_selfplay.data import text_files, hf_hub, games  # noqa: F401  (register text, hf, games)
