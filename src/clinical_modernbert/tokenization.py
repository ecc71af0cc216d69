"""Token ids of documents with a character-to-token map, at the least cost the tokenizer allows.

The medical flags need the token that holds a character. A fast tokenizer reports it through offsets, but tracking
offsets costs about a fifth of its time. The tokens of a byte-level BPE tokenizer (ModernBERT's, GPT-2's) tile the
UTF-8 bytes of the text, so the map also follows from the tokens' byte lengths: `DocumentEncoder` asks such a tokenizer
for ids only (`encode_batch_fast`). A document whose tokens do not tile its bytes (text the NFC normalizer would
change; an added token that strips the spaces beside it; an unknown token) is encoded again with offsets. Other
tokenizers are always asked for offsets.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

import numpy as np
from tokenizers import Encoding, models, normalizers, pre_tokenizers

# The byte length given to an unknown token: it covers bytes of unknown count, so no document holding one can tile.
_UNTILEABLE = -(2**62)


class TiledEncoding:
    """Token ids of a document whose tokens tile its UTF-8 bytes, and the token holding each character."""

    __slots__ = ("ids", "_ends", "_char_bytes")

    def __init__(self, ids: list[int], ends: list[int], char_bytes: list[int] | None):
        self.ids, self._ends, self._char_bytes = ids, ends, char_bytes

    def __len__(self) -> int:
        return len(self.ids)

    def char_to_token(self, char: int) -> int:
        """The token holding the first byte of character `char` (whitespace included, which trimmed offsets omit)."""
        return bisect_right(self._ends, char if self._char_bytes is None else self._char_bytes[char])


class DocumentEncoder:
    """Encodes documents without special tokens: objects with `ids`, `len()` and `char_to_token(char)`.

    The ids are those `tokenizer(texts, add_special_tokens=False)` gives; the tokenizer's backend is called directly
    (transformers' wrapper converts every encoding to Python dicts first) and, like the wrapper, with the truncation
    and padding a saved tokenizer may carry switched off.
    """

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(f"Needs a fast tokenizer (character-to-token map); got {type(tokenizer).__name__}")
        self.backend = tokenizer.backend_tokenizer
        self.byte_lengths = _token_byte_lengths(self.backend)
        self._nfc = isinstance(self.backend.normalizer, normalizers.NFC)

    @property
    def tiles(self) -> bool:
        """Whether the char-to-token map comes from token byte lengths (a byte-level BPE tokenizer)."""
        return self.byte_lengths is not None

    def __call__(self, texts: Sequence[str]) -> list:
        """`map_characters` of `encode`: the two halves, for a caller that runs the first in another thread."""
        return self.map_characters(texts, self.encode(texts))

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """The backend's encodings of `texts`, ids only for a byte-level BPE (the tokenizer releases the GIL)."""
        backend = self.backend
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        encode = backend.encode_batch_fast if self.tiles else backend.encode_batch
        return encode(list(texts), add_special_tokens=False)

    def map_characters(self, texts: Sequence[str], encodings: Sequence[Encoding]) -> list:
        """`encode`'s encodings with a character-to-token map (`TiledEncoding`, or encodings with offsets)."""
        if not self.tiles:
            return list(encodings)
        mapped = [self._tiled(text, e.ids) for text, e in zip(texts, encodings)]
        untiled = [i for i, encoding in enumerate(mapped) if encoding is None]
        if untiled:
            again = self.backend.encode_batch([texts[i] for i in untiled], add_special_tokens=False)
            for i, encoding in zip(untiled, again):
                mapped[i] = encoding
        return mapped

    def _tiled(self, text: str, ids: list[int]) -> TiledEncoding | None:
        ends = list(accumulate(map(self.byte_lengths.__getitem__, ids)))
        if text.isascii():
            return TiledEncoding(ids, ends, None) if ends and ends[-1] == len(text) else None
        if self._nfc and not unicodedata.is_normalized("NFC", text):
            return None
        char_bytes = _char_byte_offsets(text)
        return TiledEncoding(ids, ends, char_bytes[:-1]) if ends and ends[-1] == char_bytes[-1] else None


def _token_byte_lengths(backend) -> list[int] | None:
    """UTF-8 byte length per token id for a byte-level BPE tokenizer whose normalizer keeps NFC text; else None."""
    if not (
        isinstance(backend.model, models.BPE)
        and isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel)
        and not backend.pre_tokenizer.add_prefix_space
        and (backend.normalizer is None or isinstance(backend.normalizer, normalizers.NFC))
    ):
        return None
    lengths = [0] * backend.get_vocab_size(with_added_tokens=True)
    for token, index in backend.get_vocab(with_added_tokens=False).items():
        lengths[index] = len(token)  # the byte-level alphabet has one character per byte
    for index, added in backend.get_added_tokens_decoder().items():
        lengths[index] = len(added.content.encode("utf-8"))
    if backend.model.unk_token is not None and backend.token_to_id(backend.model.unk_token) is not None:
        lengths[backend.token_to_id(backend.model.unk_token)] = _UNTILEABLE
    return lengths


def _char_byte_offsets(text: str) -> list[int]:
    """The UTF-8 byte offset of each character of `text`, then the byte length of the text."""
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    sizes = 1 + (code_points >= 0x80) + (code_points >= 0x800) + (code_points >= 0x10000)
    offsets = np.zeros(len(code_points) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets.tolist()
