"""Downstream evaluation: fine-tune any BERT-family checkpoint on NER (IOB files) or classification (JSONL)."""

from ..configs import FinetuneArguments, FinetuneTrainingArguments
from .run import finetune, results_path

__all__ = ["FinetuneArguments", "FinetuneTrainingArguments", "finetune", "results_path"]
