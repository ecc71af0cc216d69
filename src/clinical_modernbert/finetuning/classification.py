"""Sequence classification from JSONL (`text`, `label`): validated reading, stride windows, per-example merge."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from ..configs.finetuning import check_stride
from .metrics import classification_scores

logger = logging.getLogger(__name__)


@dataclass
class LabelledTexts:
    """Texts and their labels (as strings) read from one JSONL file."""

    path: Path
    texts: list[str]
    labels: list[str]


def read_jsonl(path: str | Path, text_field: str = "text", label_field: str = "label") -> LabelledTexts:
    """Read one JSON object per line with a non-empty text and a string or integer label (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file not found: {path}")
    data = LabelledTexts(path, [], [])
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error})") from None
            if not isinstance(row, dict) or text_field not in row or label_field not in row:
                raise ValueError(f"{path}:{number}: expected an object with fields {text_field!r} and {label_field!r}")
            text, label = row[text_field], row[label_field]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}:{number}: field {text_field!r} must be a non-empty string, got {text!r}")
            if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
                raise ValueError(f"{path}:{number}: field {label_field!r} must be a string or integer, got {label!r}")
            data.texts.append(text)
            data.labels.append(str(label))
    if not data.texts:
        raise ValueError(f"{path} holds no examples (empty file?)")
    return data


@dataclass
class EncodedTexts:
    """Model inputs of one split and, per window, the index of the example it was cut from."""

    dataset: Dataset
    example_of_window: np.ndarray
    split_examples: int


def encode_windows(
    data: LabelledTexts, tokenizer: PreTrainedTokenizerBase, label2id: dict[str, int], max_length: int, stride: int
) -> EncodedTexts:
    """Tokenize texts; a text longer than `max_length` tokens becomes overlapping windows sharing `stride` tokens."""
    check_stride(stride, max_length - tokenizer.num_special_tokens_to_add(pair=False))
    encodings = tokenizer(
        data.texts, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True
    )
    example_of_window = np.asarray(encodings.pop("overflow_to_sample_mapping"))
    encodings["labels"] = [label2id[data.labels[i]] for i in example_of_window]
    split_examples = int((np.bincount(example_of_window) > 1).sum())
    return EncodedTexts(Dataset.from_dict(dict(encodings)), example_of_window, split_examples)


def merge_example_logits(logits: np.ndarray, example_of_window: np.ndarray, num_examples: int) -> np.ndarray:
    """Mean logits over the windows of each example."""
    sums = np.zeros((num_examples, logits.shape[-1]))
    np.add.at(sums, example_of_window, logits)
    return sums / np.bincount(example_of_window, minlength=num_examples)[:, None]


class ClassificationTask:
    """Single-label sequence classification, scored by accuracy, micro F1 and macro F1."""

    model_class = AutoModelForSequenceClassification

    def __init__(self, files: dict[str, Path], max_examples: dict[str, int | None], text_field: str, label_field: str):
        self.data = {split: read_jsonl(path, text_field, label_field) for split, path in files.items()}
        self.labels = sorted(set(self.data["train"].labels))
        if len(self.labels) < 2:
            raise ValueError(f"{self.data['train'].path}: classification needs at least 2 labels, got {self.labels}")
        for split, data in self.data.items():
            unknown = sorted(set(data.labels) - set(self.labels))
            if unknown:
                raise ValueError(
                    f"{data.path}: label(s) {unknown} do not occur in the training split, whose labels are "
                    f"{self.labels}; the model cannot predict them"
                )
            limit = max_examples.get(split)
            if limit is not None and limit < len(data.texts):
                logger.info("Data: %s: keeping the first %d of %d examples", split, limit, len(data.texts))
                data.texts, data.labels = data.texts[:limit], data.labels[:limit]
        self.encoded: dict[str, EncodedTexts] = {}

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
        return tokenizer

    def encode(self, tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int) -> None:
        label2id = {label: i for i, label in enumerate(self.labels)}
        for split, data in self.data.items():
            encoded = self.encoded[split] = encode_windows(data, tokenizer, label2id, max_length, stride)
            logger.info(
                "Data: %s: %d examples -> %d windows (%d examples split with stride %d)", split, len(data.texts),
                len(encoded.example_of_window), encoded.split_examples, stride,
            )

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
        return DataCollatorWithPadding(tokenizer)

    def num_examples(self, split: str) -> int:
        return len(self.data[split].texts)

    def data_notes(self, split: str) -> dict:
        return {"examples_split_into_windows": self.encoded[split].split_examples}

    def score(self, split: str, logits: np.ndarray) -> dict[str, float]:
        data, encoded = self.data[split], self.encoded[split]
        merged = merge_example_logits(logits, encoded.example_of_window, len(data.texts))
        return classification_scores(data.labels, [self.labels[i] for i in merged.argmax(-1)])
