"""The keys of a stream row (what `data.stream` yields) and of a masked batch (what `MedicalMaskingCollator` makes
of rows and `MLMTrainer` consumes), declared once and used by name.

Rows carry `term_flags` (0 other token, 1 first token of a medical term, 2 continuation: whole-term masking needs
the starts); batches carry `medical_mask`, 0/1 per position (is the token part of a medical term).
"""

from __future__ import annotations

from typing import TypedDict

import torch

INPUT_IDS = "input_ids"
TERM_FLAGS = "term_flags"
DOC_LENGTHS = "doc_lengths"
STREAM_STATS = "stream_stats"
STREAM_POSITION = "stream_position"

DOCUMENT_IDS = "document_ids"
POSITION_IDS = "position_ids"
MEDICAL_MASK = "medical_mask"
MASK_INPUT = "mask_input"
MASK_STATS = "mask_stats"
MASK_STEP = "mask_step"


class StreamRow(TypedDict, total=False):
    """One packed row: `[CLS] doc [SEP]` per document (or piece of one)."""

    input_ids: list[int]
    term_flags: list[int]  # per token: 0 other, 1 medical term start, 2 continuation; 0 on [CLS]/[SEP]
    doc_lengths: list[int]  # tokens per document in the row, [CLS] and [SEP] included
    stream_stats: list[list[int]]  # per source, the counters of `stream.STAT_FIELDS` the row carries
    stream_position: list[int]  # training rows only: (block, row) to resume right after this row


class MaskedBatch(TypedDict, total=False):
    """A padded, masked batch of rows (B rows of L positions)."""

    input_ids: torch.Tensor  # (B, L), masked
    attention_mask: torch.Tensor  # (B, L): 1 on tokens, 0 on padding
    labels: torch.Tensor  # (B, L): the original id where masked, -100 elsewhere
    document_ids: torch.Tensor  # (B, L): 0, 1, ... per document of the row, -1 on padding
    position_ids: torch.Tensor  # (B, L): positions restarting at each document
    medical_mask: torch.Tensor  # (B, L): 1 on tokens of medical terms
    mask_input: torch.Tensor  # (B, L): 1 where a labelled token became the mask token
    mask_stats: torch.Tensor  # (4,): the counters of `trainer.MASK_STAT_FIELDS`
    mask_step: torch.Tensor  # (): training only, the optimizer step the batch was masked for
    stream_stats: torch.Tensor  # (sources, counters): summed over the rows
    stream_position: torch.Tensor  # (B, 2): training only, each row's position
