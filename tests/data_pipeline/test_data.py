"""Data: sources, packing with EOS, tail/hash splits, the cache, and the deterministic loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stlm_selfplay.config import DataConfig
from stlm_selfplay.data import sources
from stlm_selfplay.data.cache import cache_folder, prepare_data
from stlm_selfplay.data.loader import BatchStream, PackedSequences, batch_indices, val_sequences
from stlm_selfplay.data.packing import document_ids, sequence_count
from stlm_selfplay.errors import UserError
from stlm_selfplay.model.tokenizer import EOS_ID, PAD_ID


def data_cfg(tmp_path, **kw) -> DataConfig:
    return DataConfig(cache_dir=str(tmp_path / "cache"), **kw)


def split_ids(folder, split):
    meta = json.loads((folder / "meta.json").read_text())["splits"][split]
    return np.concatenate([np.fromfile(folder / s["file"], dtype=np.uint16) for s in meta])


def test_tail_split_is_the_byte_stream_cut_once(tmp_path):
    text = "héllo wörld\n" * 50
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    folder = prepare_data(data_cfg(tmp_path, path=str(tmp_path / "a.txt"), split="tail", val_fraction=0.1))
    train, val = split_ids(folder, "train"), split_ids(folder, "val")
    stream = np.concatenate([train, val])
    assert stream[-1] == EOS_ID
    assert bytes(stream[:-1].astype(np.uint8)) == text.encode("utf-8")
    assert len(val) == round(0.1 * len(stream))


def test_small_shards_hold_the_same_stream(tmp_path):
    (tmp_path / "a.txt").write_text("abcdefghij" * 30)
    one = prepare_data(data_cfg(tmp_path, path=str(tmp_path / "a.txt"), val_fraction=0.2))
    many = prepare_data(data_cfg(tmp_path, path=str(tmp_path / "a.txt"), val_fraction=0.2, shard_tokens=7))
    assert one != many
    assert len(list(many.glob("train_*.bin"))) > 10
    for split in ("train", "val"):
        assert np.array_equal(split_ids(one, split), split_ids(many, split))


def test_hash_split_keeps_documents_whole_and_is_stable(tmp_path):
    docs = [f"document number {i} " + "x" * (i % 7) for i in range(200)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    cfg = data_cfg(tmp_path, path=str(path), text_field="body", split="hash", val_fraction=0.25)
    folder = prepare_data(cfg)

    def documents(ids):
        return [bytes(part[:-1].astype(np.uint8)).decode() for part in np.split(ids, np.where(ids == EOS_ID)[0] + 1)[:-1]]

    train, val = documents(split_ids(folder, "train")), documents(split_ids(folder, "val"))
    assert sorted(train + val) == sorted(d for d in docs)
    assert 20 < len(val) < 80  # about a quarter
    import shutil

    shutil.rmtree(folder)
    assert documents(split_ids(prepare_data(cfg), "val")) == val  # same docs again


def test_parquet_and_folder_sources(tmp_path):
    import pandas as pd

    (tmp_path / "corpus").mkdir()
    pd.DataFrame({"text": ["alpha", "beta"]}).to_parquet(tmp_path / "corpus" / "p.parquet")
    (tmp_path / "corpus" / "q.txt").write_text("gamma")
    folder = prepare_data(data_cfg(tmp_path, path=str(tmp_path / "corpus"), val_fraction=0.0))
    assert [int(x) for x in split_ids(folder, "train")] == [*b"alpha", EOS_ID, *b"beta", EOS_ID, *b"gamma", EOS_ID]


def test_second_prepare_reuses_the_cache(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("some text " * 20)
    cfg = data_cfg(tmp_path, path=str(tmp_path / "a.txt"))
    first = prepare_data(cfg)
    calls = []
    source = sources.SOURCES["text"]
    monkeypatch.setitem(sources.SOURCES, "text", sources.Source("text", lambda c: calls.append(1) or iter(()),
                                                                 source.keys, source.fingerprint))
    assert prepare_data(cfg) == first and calls == []
    (tmp_path / "a.txt").write_text("other text " * 20)  # a changed file -> a new cache folder
    assert cache_folder(cfg) != first


def test_a_crash_mid_build_leaves_nothing_usable(tmp_path, monkeypatch):
    def broken(cfg):
        yield "first document"
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(sources.SOURCES, "broken", sources.Source("broken", broken, ()))
    cfg = data_cfg(tmp_path, source="broken")
    with pytest.raises(RuntimeError):
        prepare_data(cfg)
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_and_empty_data_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="matches no files"):
        prepare_data(data_cfg(tmp_path, path=str(tmp_path / "missing.txt")))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="produced no text"):
        prepare_data(data_cfg(tmp_path, path=str(tmp_path / "empty.txt")))
    assert list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "d.jsonl").write_text('{"content": "x"}\n')
    with pytest.raises(UserError, match="no field 'text'.*data.text_field"):
        prepare_data(data_cfg(tmp_path, path=str(tmp_path / "d.jsonl")))
    with pytest.raises(UserError, match="unknown data source 'txt' \\(did you mean 'text'\\?\\)"):
        sources.get_source("txt")


def test_sequences_overlap_by_one_so_every_id_is_a_target_once(tmp_path):
    (tmp_path / "a.txt").write_text("0123456789" * 10)  # 101 ids with EOS
    folder = prepare_data(data_cfg(tmp_path, path=str(tmp_path / "a.txt"), val_fraction=0.0))
    seqs = PackedSequences(folder, "train", seq_len=8)
    assert len(seqs) == sequence_count(101, 8) == 14
    rows = seqs.get(np.arange(len(seqs)))
    targets = np.concatenate([r[1:] for r in rows])
    stream = split_ids(folder, "train")
    assert np.array_equal(targets, stream[1:1 + len(targets)])
    assert all(rows[i][-1] == rows[i + 1][0] for i in range(len(rows) - 1))


def test_shifted_epochs_read_new_windows_and_resume_exactly(tmp_path):
    (tmp_path / "a.txt").write_text("".join(chr(97 + i % 26) for i in range(2000)))
    folder = prepare_data(data_cfg(tmp_path, path=str(tmp_path / "a.txt"), val_fraction=0.0))
    stream, seq_len, b = split_ids(folder, "train"), 16, 4
    plain, shifted = PackedSequences(folder, "train", seq_len), PackedSequences(folder, "train", seq_len, True)
    assert len(shifted) == sequence_count(len(stream) - (seq_len - 2), seq_len) < len(plain)
    per_epoch = len(shifted) // b
    shifts = [shifted.epoch_shift(5, e) for e in range(12)]
    assert shifts[0] == 0 and all(0 <= s < seq_len - 1 for s in shifts) and len(set(shifts[1:])) > 3
    assert plain.epoch_shift(5, 3) == 0  # off by default
    loader = BatchStream(shifted, b, seed=5, prefetch=0)
    for epoch in range(12):
        m = epoch * per_epoch + 1
        rows, idx = loader.load(m).numpy(), batch_indices(m, len(shifted), b, 5)
        for row, i in zip(rows, idx):  # sequence i of epoch e starts at i (L - 1) + shift_e
            start = int(i) * (seq_len - 1) + shifts[epoch]
            assert np.array_equal(row, stream[start:start + seq_len])
    start = (len(shifted) - 1) * (seq_len - 1) + seq_len - 2  # the last sequence at the largest shift still fits
    assert start + seq_len <= len(stream)
    assert np.array_equal(shifted.get(np.array([len(shifted) - 1]), seq_len - 2)[0], stream[start:start + seq_len])
    resumed = BatchStream(shifted, b, seed=5, start=3 * per_epoch - 1, prefetch=2)  # across an epoch boundary
    for m in range(3 * per_epoch - 1, 3 * per_epoch + 2):
        assert torch.equal(next(resumed), loader.load(m))
    resumed.close()


def test_val_set_covers_the_val_stream_with_pad_at_the_end(tmp_path):
    (tmp_path / "a.txt").write_text("abcdefghijklmnopqrstuvwxyz" * 4)
    folder = prepare_data(data_cfg(tmp_path, path=str(tmp_path / "a.txt"), val_fraction=0.5))
    val = val_sequences(folder, seq_len=10)
    stream = split_ids(folder, "val")
    assert val.dtype == np.uint16 and val.shape[1] == 10
    targets = np.concatenate([r[1:][r[1:] != PAD_ID] for r in val])
    assert np.array_equal(targets, stream[1:])
    assert val[-1][-1] == PAD_ID or len(stream) % 9 == 1
    assert len(val_sequences(folder, 10, max_sequences=2)) == 2
    seen = val_sequences(folder, 10, max_sequences=3, split="train")  # the train stream, cut the same way
    assert np.array_equal(seen.reshape(-1)[:10], split_ids(folder, "train")[:10]) and len(seen) == 3


def test_two_ranks_see_exactly_one_double_batch(tmp_path):
    n, b = 103, 4
    for m in range(60):  # spans several epochs
        both = batch_indices(m, n, 2 * b, seed=3)
        assert len(both) == 2 * b and len(set(both)) == 2 * b
    epoch = np.concatenate([batch_indices(m, n, 8, seed=3) for m in range(n // 8)])
    assert len(set(epoch)) == len(epoch) == (n // 8) * 8  # an epoch never repeats a sequence
    assert not np.array_equal(batch_indices(0, n, 8, 3), batch_indices(n // 8, n, 8, 3))  # reshuffled

    (tmp_path / "a.txt").write_text("".join(chr(97 + i % 26) for i in range(3000)))
    folder = prepare_data(data_cfg(tmp_path, path=str(tmp_path / "a.txt"), val_fraction=0.0))
    seqs = PackedSequences(folder, "train", 16)
    single = BatchStream(seqs, 2 * b, seed=1, prefetch=0)
    ranks = [BatchStream(seqs, b, seed=1, rank=r, world_size=2, prefetch=3) for r in range(2)]
    for _ in range(30):
        assert torch.equal(next(single), torch.cat([next(ranks[0]), next(ranks[1])]))
    resumed = BatchStream(seqs, 2 * b, seed=1, start=30, prefetch=2)
    assert torch.equal(next(resumed), next(single))
    for stream in ranks + [resumed]:
        stream.close()
    with pytest.raises(UserError, match="fewer than one global batch"):
        BatchStream(seqs, 1000, seed=1, prefetch=0)


def test_games_source_packs_the_envs_transcripts(tmp_path):
    from stlm_selfplay.envs.transcripts import generate_transcripts

    cfg = data_cfg(tmp_path, source="games", games={"tictactoe": 1.0, "nim": 1.0}, players=["random", "random"],
                   episodes=30, seed=4, split="hash", val_fraction=0.2)
    folder = prepare_data(cfg)
    stream = np.concatenate([split_ids(folder, "train"), split_ids(folder, "val")])
    assert (stream == EOS_ID).sum() == 30  # one document per game
    expected = sorted(generate_transcripts({"tictactoe": 1.0, "nim": 1.0}, ["random", "random"], 30, 4))
    got = sorted(bytes(p[:-1].astype(np.uint8)).decode() for p in np.split(stream, np.where(stream == EOS_ID)[0] + 1)[:-1])
    assert got == expected
    assert cache_folder(DataConfig(**{**cfg.__dict__, "seed": 5})) != folder  # another seed, other games
    with pytest.raises(UserError, match="data.games is empty"):
        prepare_data(data_cfg(tmp_path, source="games"))


def test_hf_source_calls_load_dataset_with_the_configured_names(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter([{"story": "once upon"}, {"story": "a time"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = data_cfg(tmp_path, source="hf", hf_name="org/stories", hf_config="", hf_split="validation",
                   text_field="story", val_fraction=0.0)
    folder = prepare_data(cfg)
    assert calls == [("org/stories", None, "validation", True)]
    assert [int(x) for x in split_ids(folder, "train")] == [*b"once upon", EOS_ID, *b"a time", EOS_ID]
    with pytest.raises(UserError, match="no field 'text'"):
        prepare_data(data_cfg(tmp_path, source="hf", hf_name="org/other"))
    with pytest.raises(UserError, match="data.hf_name is empty"):
        prepare_data(data_cfg(tmp_path, source="hf"))
