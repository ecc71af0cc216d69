"""Packing document chunks into fixed-length rows without ever joining two documents' attention.

A row keeps the lengths of the documents it holds (`doc_lengths`); the collator turns them into per-token
`document_ids` and restarting `position_ids`, and the trainer turns those into the attention mask of each layer type.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import torch


@dataclass(frozen=True)
class Chunk:
    """One document (or a piece of a long one), already wrapped as `[CLS] ... [SEP]`."""

    input_ids: list[int]
    medical_mask: list[int]
    source: int

    def __len__(self) -> int:
        return len(self.input_ids)


def chunk_document(ids: list[int], flags: list[int], source: int, max_len: int, cls_id: int, sep_id: int):
    """Split a tokenized document (no special tokens) into chunks of at most `max_len` tokens with `[CLS]`/`[SEP]`.

    Long documents are split, never truncated. A medical term cut at a chunk border restarts as a term.
    """
    body = max_len - 2
    for start in range(0, max(len(ids), 1), body):
        piece_flags = list(flags[start : start + body])
        if piece_flags and piece_flags[0] == 2:
            piece_flags[0] = 1
        yield Chunk([cls_id, *ids[start : start + body], sep_id], [0, *piece_flags, 0], source)


class BestFitPacker:
    """Online best-fit packing: each chunk goes to the open row it fills most tightly.

    Up to `open_rows` rows stay open; when a chunk fits none and all are open, the fullest row is emitted. With
    `packing=False` every chunk is a row of its own (padded per document).
    """

    def __init__(self, max_len: int, packing: bool = True, open_rows: int = 64):
        self.max_len, self.packing, self.open_rows = max_len, packing, open_rows
        self.rows: list[list[Chunk]] = []
        self.free: list[int] = []

    def add(self, chunk: Chunk) -> list[list[Chunk]]:
        """Place a chunk; return the rows completed by it."""
        if len(chunk) > self.max_len:
            raise ValueError(f"chunk of {len(chunk)} tokens exceeds max_len={self.max_len}")
        if not self.packing:
            return [[chunk]]
        done = []
        fits = [i for i, free in enumerate(self.free) if free >= len(chunk)]
        if fits:
            i = min(fits, key=self.free.__getitem__)
        else:
            if len(self.rows) >= self.open_rows:
                done.append(self._pop(min(range(len(self.free)), key=self.free.__getitem__)))
            self.rows.append([])
            self.free.append(self.max_len)
            i = len(self.rows) - 1
        self.rows[i].append(chunk)
        self.free[i] -= len(chunk)
        if self.free[i] < 3:  # no chunk ([CLS] x [SEP]) fits any more
            done.append(self._pop(i))
        return done

    def flush(self) -> list[list[Chunk]]:
        """Emit every open row, fullest first."""
        order = sorted(range(len(self.rows)), key=self.free.__getitem__)
        rows = [self.rows[i] for i in order]
        self.rows, self.free = [], []
        return rows

    def state(self) -> list:
        """Open rows as plain lists (JSON-serialisable)."""
        return [[[c.input_ids, c.medical_mask, c.source] for c in row] for row in self.rows]

    def load_state(self, state: list) -> None:
        self.rows = [[Chunk(*c) for c in row] for row in state]
        self.free = [self.max_len - sum(len(c) for c in row) for row in self.rows]

    def _pop(self, i: int) -> list[Chunk]:
        self.free.pop(i)
        return self.rows.pop(i)


def row_to_example(row: list[Chunk]) -> dict:
    """A packed row as a training example: concatenated ids and flags, plus document lengths and sources."""
    return {
        "input_ids": list(chain.from_iterable(c.input_ids for c in row)),
        "medical_mask": list(chain.from_iterable(c.medical_mask for c in row)),
        "doc_lengths": [len(c) for c in row],
    }


def document_tensors(doc_lengths: list[list[int]], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token document index (padding = -1) and position ids restarting at 0 in each document."""
    lengths = torch.tensor([n for row in doc_lengths for n in row], dtype=torch.long)
    docs_per_row = torch.tensor([len(row) for row in doc_lengths], dtype=torch.long)
    row_of_doc = torch.repeat_interleave(torch.arange(len(doc_lengths)), docs_per_row)
    first_doc = torch.cumsum(docs_per_row, 0) - docs_per_row  # index of each row's first document
    doc_start = torch.cumsum(lengths, 0) - lengths  # with the batch's documents laid end to end
    row_start = doc_start[first_doc[row_of_doc]]  # per document: where its row starts
    token_doc = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    token_row, column = row_of_doc[token_doc], torch.arange(len(token_doc)) - row_start[token_doc]
    document_ids = torch.full((len(doc_lengths), seq_len), -1, dtype=torch.long)
    position_ids = torch.zeros((len(doc_lengths), seq_len), dtype=torch.long)
    document_ids[token_row, column] = (torch.arange(len(lengths)) - first_doc[row_of_doc])[token_doc]
    position_ids[token_row, column] = column - (doc_start - row_start)[token_doc]
    return document_ids, position_ids
