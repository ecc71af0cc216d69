"""DocumentEncoder: the tokenizer's ids, and a character-to-token map equal to the one offsets give."""

import json
import random

import pytest
from conftest import shared_path
from tokenizers import AddedToken, Encoding, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from clinical_modernbert.lexicon import Lexicon
from clinical_modernbert.tokenization import DocumentEncoder, TiledEncoding

PIECES = ["café", "naïve", "µg", "≥5", "±", "İstanbul", "β-blocker", "日本語", "😀", "ﬁbrosis", "\u00a0", "  ",
          "\t", "\n\n", "Aspirin", "250.00", "E11.9", "(CD4+)", "--", "x", "[CLS]", "<|padding|>", "     "]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) + rng.choice(["", " "]) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def shared_texts(n: int) -> list[str]:
    lines = shared_path("data/corpus/pubmed_ohsumed.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:n]]


def assert_same_as_offsets(tokenizer, texts) -> list:
    """The encoder's ids and char-to-token map equal those of the tokenizer with offsets, for every character that
    is not whitespace (trimmed offsets leave whitespace out; term spans never start or end on it)."""
    encodings = DocumentEncoder(tokenizer)(texts)
    reference = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    for text, ours, theirs in zip(texts, encodings, reference):
        assert ours.ids == theirs.ids and len(ours) == len(theirs)
        chars = [c for c in range(len(text)) if not text[c].isspace()]
        assert [ours.char_to_token(c) for c in chars] == [theirs.char_to_token(c) for c in chars], text
    return encodings


def test_byte_level_map_equals_the_offsets_one(embedded_tokenizer):
    texts = random_texts(500)
    encodings = assert_same_as_offsets(embedded_tokenizer, texts)
    tiled = [isinstance(e, TiledEncoding) for e in encodings]
    assert DocumentEncoder(embedded_tokenizer).tiles and sum(tiled) > 100  # non-ASCII text tiles too
    assert all(tiled[i] for i, text in enumerate(texts) if text.isascii())


def test_real_tokenizer_tiles_pubmed_and_gives_the_same_flags():
    tokenizer = AutoTokenizer.from_pretrained(shared_path("modernbert-tokenizer"))
    texts = shared_texts(300) + random_texts(300, seed=1)
    encodings = assert_same_as_offsets(tokenizer, texts)
    assert all(isinstance(e, TiledEncoding) for e in encodings[:300])  # the fast path is the one PubMed takes
    lexicon = Lexicon.from_files()
    with_offsets = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    flags = lexicon.flags(texts, encodings)
    assert flags == lexicon.flags(texts, with_offsets)
    assert sum(f > 0 for doc in flags for f in doc) > 5000


@pytest.mark.parametrize(
    "text",
    ["Naive: nai\u0308ve, cafe\u0301", "Fill the [MASK] here", "Unseen byte: \u0100"],
    ids=["not-NFC", "added-token-strips-spaces", "unknown-token"],
)
def test_text_that_cannot_tile_is_encoded_with_offsets(text):
    """Text the NFC normalizer changes, an added token taking the space before it (`lstrip`), an unknown token."""
    tokenizer = _byte_level_bpe_with_unknown_token()
    [encoding] = assert_same_as_offsets(tokenizer, [text])
    assert isinstance(encoding, Encoding)
    [plain] = assert_same_as_offsets(tokenizer, ["Fill the here"])
    assert isinstance(plain, TiledEncoding)


def test_other_tokenizers_are_asked_for_offsets():
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "aspirin": 1, "for": 2, "pain": 3}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    encoder = DocumentEncoder(tokenizer)
    assert not encoder.tiles
    [encoding] = assert_same_as_offsets(tokenizer, ["aspirin for chest pain"])
    assert isinstance(encoding, Encoding)
    assert Lexicon(["aspirin", "chest pain"]).tokenize(encoder, ["aspirin for chest pain"])[1] == [[1, 0, 1, 2]]


def _ids_equal_the_tokenizer_call(tokenizer, texts):
    tokenizer.backend_tokenizer.enable_truncation(max_length=8)  # a saved tokenizer may carry truncation
    tokenizer.backend_tokenizer.enable_padding(length=600)
    expected = tokenizer(texts, add_special_tokens=False)["input_ids"]
    tokenizer.backend_tokenizer.enable_truncation(max_length=8)
    tokenizer.backend_tokenizer.enable_padding(length=600)
    assert [e.ids for e in DocumentEncoder(tokenizer)(texts)] == expected
    assert max(map(len, expected)) > 8 and min(map(len, expected)) < 600


def test_ids_are_those_of_the_tokenizer_call(embedded_tokenizer):
    texts = ["Omeprazole 20 mg for GERD; İstanbul café — naïve T-cells (CD4+).",
             "ICD-10 code E11.9: Type 2 diabetes", "  x"]
    _ids_equal_the_tokenizer_call(embedded_tokenizer, texts)


def test_ids_are_those_of_the_real_tokenizer_call():
    tokenizer = AutoTokenizer.from_pretrained(shared_path("modernbert-tokenizer"))
    _ids_equal_the_tokenizer_call(tokenizer, shared_texts(300))


def test_needs_a_fast_tokenizer():
    with pytest.raises(TypeError, match="fast tokenizer"):
        DocumentEncoder(lambda texts, **kw: None)


def _byte_level_bpe_with_unknown_token() -> PreTrainedTokenizerFast:
    """A byte-level BPE (NFC, ModernBERT-like `[MASK]` with `lstrip`) that knows only the bytes of its training text."""
    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"], show_progress=False)
    backend.train_from_iterator(["Naive: naïve, café. Fill the here. Unseen byte"] * 10, trainer)
    mask = AddedToken("[MASK]", lstrip=True, special=True)
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", mask_token=mask)
