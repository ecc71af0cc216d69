"""Named-entity recognition from IOB files: validated reading, first-sub-token labels, stride windows, per-word
merge."""

from __future__ import annotations

import copy
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset
from tokenizers import pre_tokenizers
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, PreTrainedTokenizerBase

from ..configs.finetuning import check_stride
from .metrics import entity_scores

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
TAG_PATTERN = re.compile(r"O|[BI]-\S+")


@dataclass
class IobFile:
    """Sentences of an IOB2 file: words, tags, and the lines whose orphan `I-` tag was read as `B-`."""

    path: Path
    words: list[list[str]]
    tags: list[list[str]]
    repaired_lines: list[int] = field(default_factory=list)


def read_iob(path: str | Path) -> IobFile:
    """Read `token<TAB>tag` lines, a blank line between sentences; tags are O, B-<type> or I-<type>.

    An `I-X` tag that continues no `X` entity (after O, after another type, or first in a sentence) is read as
    `B-X`, as seqeval's lenient mode does; those lines are counted, logged and kept in `repaired_lines`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IOB file not found: {path}")
    iob, words, tags = IobFile(path, [], []), [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{number}: not valid UTF-8 ({e.reason} at byte {e.start} of the line); "
                                 "save the file as UTF-8") from None
            if not line.strip():
                if words:
                    iob.words.append(words)
                    iob.tags.append(tags)
                    words, tags = [], []
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not TAG_PATTERN.fullmatch(parts[1]):
                raise ValueError(
                    f"{path}:{number}: malformed IOB line {line!r}; expected 'token<TAB>tag' with tag O, B-<type> "
                    "or I-<type>, and a blank line between sentences"
                )
            word, tag = parts
            if tag.startswith("I-") and (not tags or tags[-1][2:] != tag[2:]):
                tag = f"B-{tag[2:]}"
                iob.repaired_lines.append(number)
            words.append(word)
            tags.append(tag)
    if words:
        iob.words.append(words)
        iob.tags.append(tags)
    if not iob.words:
        raise ValueError(f"{path} holds no sentences (empty file?)")
    if iob.repaired_lines:
        logger.warning(
            "Data: %s: %d I- tag(s) continued no entity of their type and were read as B- (seqeval's lenient "
            "reading); lines %s%s", path, len(iob.repaired_lines), iob.repaired_lines[:10],
            " ..." if len(iob.repaired_lines) > 10 else "",
        )
    return iob


def label_list(train: IobFile) -> list[str]:
    """`O`, then `B-`/`I-` for every entity type of the training file."""
    types = sorted({tag[2:] for tags in train.tags for tag in tags if tag != "O"})
    return ["O", *(f"{prefix}-{kind}" for kind in types for prefix in "BI")]


def check_labels(iob: IobFile, labels: list[str]) -> None:
    """Refuse tags that the training split never taught the model."""
    unknown = Counter(tag for tags in iob.tags for tag in tags if tag not in labels)
    if unknown:
        raise ValueError(
            f"{iob.path}: tag(s) {dict(unknown)} (tag: count) do not occur in the training split, whose labels are "
            f"{labels}; the model cannot predict them"
        )


def word_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A copy of `tokenizer` that tokenizes each pre-split word as it appears in running text.

    Byte-level BPE (ModernBERT, RoBERTa) marks a word's leading space in its first token; without
    `add_prefix_space` each pre-split word is tokenized as if glued to the previous one, unlike in pretraining.
    transformers 5 ignores `add_prefix_space=` for ModernBERT's tokenizer, so it is set on the backend here.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel):
        return tokenizer
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.backend_tokenizer.pre_tokenizer.add_prefix_space = True
    return tokenizer


def window_spans(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """`[start, end)` spans of at most `size` items covering `range(length)`; neighbours share `stride` items."""
    check_stride(stride, size)
    spans, start = [], 0
    while True:
        end = min(start + size, length)
        spans.append((start, end))
        if end == length:
            return spans
        start = end - stride


@dataclass
class Window:
    """One model input cut from a sentence: where its words' first sub-tokens sit and how much context they have."""

    sentence: int
    positions: list[int]
    words: list[int]
    context: list[int]


@dataclass
class EncodedNer:
    """Model inputs of one split (`input_ids`, `attention_mask`, `labels`) and the windows to merge them back."""

    dataset: Dataset
    windows: list[Window]
    split_sentences: int
    untokenized_words: int


def encode_windows(
    iob: IobFile, tokenizer: PreTrainedTokenizerBase, label2id: dict[str, int], max_length: int, stride: int
) -> EncodedNer:
    """Tokenize sentences into windows of at most `max_length` tokens, labelling each word's first sub-token.

    A sentence longer than the model's input is cut into windows sharing `stride` tokens (a cut may fall inside
    a word); every window keeps the tokenizer's special tokens. Other sub-tokens and special tokens get -100.
    """
    encodings = tokenizer(iob.words, is_split_into_words=True, add_special_tokens=True)
    rows, windows, split_sentences, untokenized = {"input_ids": [], "labels": []}, [], 0, 0
    for s, tags in enumerate(iob.tags):
        ids, word_ids = encodings["input_ids"][s], encodings.word_ids(s)
        content = [j for j, w in enumerate(word_ids) if w is not None]
        untokenized += len(tags) - len({word_ids[j] for j in content})
        if not content:
            continue
        prefix, suffix = ids[: content[0]], ids[content[-1] + 1 :]
        words = word_ids[content[0] : content[-1] + 1]
        n = len(words)
        spans = window_spans(n, max_length - len(prefix) - len(suffix), stride)
        split_sentences += len(spans) > 1
        for start, end in spans:
            window, labels = Window(s, [], [], []), [IGNORE_INDEX] * len(prefix)
            for k in range(start, end):
                if k > 0 and words[k] == words[k - 1]:
                    labels.append(IGNORE_INDEX)
                    continue
                labels.append(label2id[tags[words[k]]])
                window.positions.append(len(prefix) + k - start)
                window.words.append(words[k])
                # Tokens seen on each side; a side that ends the sentence (not a cut) counts as unlimited.
                window.context.append(min(k - start if start else n, end - 1 - k if end < n else n))
            rows["input_ids"].append(prefix + ids[content[0] + start : content[0] + end] + suffix)
            rows["labels"].append(labels + [IGNORE_INDEX] * len(suffix))
            windows.append(window)
    rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
    if untokenized:
        logger.warning(
            "Data: %s: %d word(s) produced no token with this tokenizer; they get no training label and are "
            "predicted O", iob.path, untokenized,
        )
    return EncodedNer(Dataset.from_dict(rows), windows, split_sentences, untokenized)


def merge_word_predictions(logits: np.ndarray, encoded: EncodedNer, iob: IobFile, id2label: dict) -> list[list[str]]:
    """One tag per word: from the window where the word's first sub-token has the most context; O if none."""
    best = [[(-1, "O")] * len(tags) for tags in iob.tags]
    for row, window in zip(logits, encoded.windows, strict=True):
        predicted = row[window.positions].argmax(-1)
        for word, context, label in zip(window.words, window.context, predicted, strict=True):
            if context > best[window.sentence][word][0]:
                best[window.sentence][word] = (context, id2label[int(label)])
    return [[tag for _, tag in sentence] for sentence in best]


class NerTask:
    """Token classification from IOB files, scored by strict entity-level precision, recall and F1."""

    model_class = AutoModelForTokenClassification

    def __init__(self, files: dict[str, Path], max_examples: dict[str, int | None]):
        self.data = {split: read_iob(path) for split, path in files.items()}
        self.labels = label_list(self.data["train"])
        for split, iob in self.data.items():
            check_labels(iob, self.labels)
            limit = max_examples.get(split)
            if limit is not None and limit < len(iob.words):
                logger.info("Data: %s: keeping the first %d of %d sentences", split, limit, len(iob.words))
                iob.words, iob.tags = iob.words[:limit], iob.tags[:limit]
        self.encoded: dict[str, EncodedNer] = {}

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
        return word_tokenizer(tokenizer)

    def encode(self, tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int) -> None:
        label2id = {label: i for i, label in enumerate(self.labels)}
        for split, iob in self.data.items():
            encoded = self.encoded[split] = encode_windows(iob, tokenizer, label2id, max_length, stride)
            logger.info(
                "Data: %s: %d sentences, %d words -> %d windows (%d sentences split with stride %d)", split,
                len(iob.words), sum(map(len, iob.words)), len(encoded.windows), encoded.split_sentences, stride,
            )

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> DataCollatorForTokenClassification:
        return DataCollatorForTokenClassification(tokenizer)

    def num_examples(self, split: str) -> int:
        return len(self.data[split].words)

    def data_notes(self, split: str) -> dict:
        encoded, iob = self.encoded[split], self.data[split]
        return {
            "sentences_split_into_windows": encoded.split_sentences,
            "untokenized_words_predicted_O": encoded.untokenized_words,
            "orphan_I_tags_read_as_B": len(iob.repaired_lines),
        }

    def score(self, split: str, logits: np.ndarray) -> dict[str, float]:
        id2label = dict(enumerate(self.labels))
        predicted = merge_word_predictions(logits, self.encoded[split], self.data[split], id2label)
        return entity_scores(self.data[split].tags, predicted)
