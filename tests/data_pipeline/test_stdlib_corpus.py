"""The standard-library corpus through the `text` source: val is exactly the held-out files."""

from __future__ import annotations

import numpy as np

from stlm_selfplay.config import DataConfig
from stlm_selfplay.data.cache import prepare_data
from stlm_selfplay.data.loader import PackedSequences
from stlm_selfplay.data.stdlib_corpus import VAL_FILES, stdlib_files, write_stdlib_corpus
from stlm_selfplay.model.tokenizer import EOS_ID


def _fake_stdlib(root):
    for name, text in {"a.py": "x = 1\n", "pkg/b.py": "é = 'ü'\n", "test/skip.py": "no\n",
                       "site-packages/x.py": "no\n", "textwrap.py": "held out\n", "json/decoder.py": "also\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def test_found_files_skip_tests_and_site_packages(tmp_path):
    _fake_stdlib(tmp_path)
    assert stdlib_files(tmp_path) == ["a.py", "json/decoder.py", "pkg/b.py", "textwrap.py"]


def test_val_split_holds_exactly_the_held_out_files(tmp_path):
    root = tmp_path / "lib"
    _fake_stdlib(root)
    info = write_stdlib_corpus(tmp_path / "corpus.jsonl", root=root)
    assert info["val_files"] == [f for f in VAL_FILES if f in ("textwrap.py", "json/decoder.py")]
    assert info["train_files"] == 2 and info["train_bytes"] == len("x = 1\n") + len("é = 'ü'\n".encode())
    folder = prepare_data(DataConfig(path=str(tmp_path / "corpus.jsonl"), split="tail",
                                     val_fraction=info["val_fraction"], cache_dir=str(tmp_path / "cache")))
    val = np.concatenate(PackedSequences(folder, "val", 2).shards).tolist()
    expected = []
    for name in info["val_files"]:
        expected += list((root / name).read_bytes()) + [EOS_ID]
    assert val == expected


def test_the_real_standard_library_is_found_and_large():
    files = stdlib_files()
    assert len(files) > 300 and all(f in files for f in VAL_FILES)
