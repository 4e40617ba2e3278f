"""Byte tokenizer: ids, lossless round trips (also invalid UTF-8), padding, save/load."""

from __future__ import annotations

import random

import stlm_selfplay  # noqa: F401  (registers the Auto classes)
from transformers import AutoTokenizer

from stlm_selfplay.model.tokenizer import (BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, ByteTokenizer, decode_ids,
                                           encode_bytes, text_to_bytes)


def random_byte_strings(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))) for _ in range(n)]


def test_special_ids_follow_the_bytes():
    assert (PAD_ID, BOS_ID, EOS_ID, VOCAB_SIZE) == (256, 257, 258, 259)
    tok = ByteTokenizer()
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (256, 257, 258)
    assert len(tok) == 259


def test_plain_helpers_round_trip_1000_random_byte_strings():
    for data in random_byte_strings(1000):
        ids = encode_bytes(data)
        assert ids == list(data)
        assert decode_ids(ids) == data


def test_hf_tokenizer_round_trips_1000_random_byte_strings_including_invalid_utf8():
    tok = ByteTokenizer()
    strings = random_byte_strings(1000, seed=1)
    assert any(_invalid_utf8(s) for s in strings)
    for data in strings:
        text = data.decode("utf-8", "surrogateescape")
        ids = tok(text)["input_ids"]
        assert ids == list(data)
        back = tok.decode(ids)
        assert text_to_bytes(back) == data


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_specials_are_dropped_and_literal_special_text_stays_bytes():
    tok = ByteTokenizer()
    assert decode_ids([104, 105, EOS_ID, PAD_ID, BOS_ID]) == b"hi"
    assert tok("<eos>")["input_ids"] == list(b"<eos>")
    assert tok.decode([104, 105, EOS_ID], skip_special_tokens=True) == "hi"
    assert tok.decode([104, 105, EOS_ID]) == "hi<eos>"


def test_left_and_right_padding():
    tok = ByteTokenizer()
    right = tok(["ab", "abcd"], padding=True)
    assert right["input_ids"] == [[97, 98, PAD_ID, PAD_ID], [97, 98, 99, 100]]
    assert right["attention_mask"] == [[1, 1, 0, 0], [1, 1, 1, 1]]
    left = tok(["ab", "abcd"], padding=True, padding_side="left")
    assert left["input_ids"] == [[PAD_ID, PAD_ID, 97, 98], [97, 98, 99, 100]]
    assert left["attention_mask"] == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_save_and_auto_tokenizer_load(tmp_path):
    ByteTokenizer().save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(tok, ByteTokenizer)
    assert tok("é\x00")["input_ids"] == [0xC3, 0xA9, 0]
    assert (tok.pad_token_id, tok.eos_token_id) == (PAD_ID, EOS_ID)
