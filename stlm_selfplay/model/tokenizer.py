"""Byte tokenizer: ids 0-255 are the bytes themselves, then pad, bos and eos.

    id(b) = b for a byte b in 0..255;  PAD_ID = 256, BOS_ID = 257, EOS_ID = 258;  VOCAB_SIZE = 259

Token arrays fit in uint16. Every byte string round-trips, valid UTF-8 or not: the plain helpers
`encode_bytes` / `decode_ids` work on `bytes`; the Hugging Face `ByteTokenizer` works on `str`
and maps invalid UTF-8 to lone surrogates (Python's "surrogateescape"), so
`tok.decode(tok(s).input_ids)` gives back `s`, and `.encode("utf-8", "surrogateescape")` gives
back the original bytes.
"""

from __future__ import annotations

from typing import Iterable

from transformers import AddedToken, PreTrainedTokenizer

NUM_BYTES = 256
PAD_ID = 256
BOS_ID = 257
EOS_ID = 258
VOCAB_SIZE = 259
SPECIAL_TOKENS = {PAD_ID: "<pad>", BOS_ID: "<bos>", EOS_ID: "<eos>"}
UTF8_ERRORS = "surrogateescape"  # invalid UTF-8 bytes <-> lone surrogates, losslessly


def encode_bytes(data: bytes) -> list[int]:
    """Bytes -> ids (the identity on values)."""
    return list(bytes(data))


def decode_ids(ids: Iterable[int]) -> bytes:
    """Ids -> bytes; pad/bos/eos (ids >= 256) are dropped."""
    return bytes(int(i) for i in ids if 0 <= int(i) < NUM_BYTES)


def text_to_bytes(text: str) -> bytes:
    """A `str` (possibly holding surrogate-escaped bytes) -> its UTF-8 bytes, losslessly."""
    return text.encode("utf-8", UTF8_ERRORS)


def bytes_to_text(data: bytes) -> str:
    """Bytes -> `str`; invalid UTF-8 becomes lone surrogates so `text_to_bytes` inverts it."""
    return data.decode("utf-8", UTF8_ERRORS)


class ByteTokenizer(PreTrainedTokenizer):
    """A transformers tokenizer over raw UTF-8 bytes (no vocabulary file, nothing to train).

    Tokens are one-character strings `chr(b)` for byte b, plus `<pad>`, `<bos>`, `<eos>`. Text is
    always read as bytes: a literal "<eos>" in the input is five bytes, never the special token
    (`split_special_tokens=True`). No special tokens are added around sequences.
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", **kwargs):
        specials = {i: AddedToken(SPECIAL_TOKENS[i], special=True, normalized=False) for i in SPECIAL_TOKENS}
        self._added_tokens_decoder = specials
        kwargs.setdefault("split_special_tokens", True)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.pop("added_tokens_decoder", None)  # fixed ids: never taken from a saved file
        super().__init__(pad_token=pad_token, bos_token=bos_token, eos_token=eos_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    def __len__(self) -> int:
        return VOCAB_SIZE

    def get_vocab(self) -> dict[str, int]:
        vocab = {chr(i): i for i in range(NUM_BYTES)}
        vocab.update({tok: i for i, tok in SPECIAL_TOKENS.items()})
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [chr(b) for b in text_to_bytes(text)]

    def _convert_token_to_id(self, token: str) -> int:
        if len(token) == 1 and ord(token) < NUM_BYTES:
            return ord(token)
        return self.get_vocab().get(str(token), PAD_ID)

    def _convert_id_to_token(self, index: int) -> str:
        return chr(index) if index < NUM_BYTES else SPECIAL_TOKENS[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        out = bytearray()
        for token in tokens:
            if len(token) == 1 and ord(token) < NUM_BYTES:
                out.append(ord(token))
            else:
                out += str(token).encode("utf-8")
        return bytes_to_text(bytes(out))

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary is fixed: nothing to save
