"""Packing document chunks into fixed-length rows without ever joining two documents' attention.

A row keeps the lengths of the documents it holds (`doc_lengths`); the collator turns them into per-token
`document_ids` and restarting `position_ids`, and the trainer turns those into the attention mask of each layer type.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

import torch

from .rows import DOC_LENGTHS, INPUT_IDS, TERM_FLAGS, StreamRow


@dataclass(frozen=True, slots=True)
class Chunk:
    """One document (or a piece of a long one): token ids and medical flags, without the `[CLS]`/`[SEP]` a row adds.

    `starts_document` is False for the second and later pieces of a split document.
    """

    input_ids: list[int]
    term_flags: list[int]  # see rows.TERM_FLAGS
    source: int
    starts_document: bool = True

    def __len__(self) -> int:  # its length in a row, `[CLS]` and `[SEP]` included
        return len(self.input_ids) + 2


def chunk_document(ids: list[int], flags: list[int], source: int, max_len: int):
    """Split a tokenized document (no special tokens) into chunks that fit `max_len` with `[CLS]`/`[SEP]`.

    Long documents are split, never truncated. A medical term cut at a chunk border restarts as a term.
    """
    body = max_len - 2
    if len(ids) <= body:
        yield Chunk(ids, flags, source)
        return
    for start in range(0, len(ids), body):
        piece_flags = flags[start : start + body]
        if piece_flags[0] == 2:
            piece_flags[0] = 1
        yield Chunk(ids[start : start + body], piece_flags, source, start == 0)


class BestFitPacker:
    """Online best-fit packing: each chunk goes to the open row it fills most tightly (the oldest on a tie).

    Up to `open_rows` rows stay open; when a chunk fits none and all are open, the fullest row is emitted. With
    `packing=False` every chunk is a row of its own (padded per document). Open rows are kept sorted by free space,
    so placing a chunk is a binary search.
    """

    def __init__(self, max_len: int, packing: bool = True, open_rows: int = 64):
        self.max_len, self.packing, self.open_rows = max_len, packing, open_rows
        self._rows: dict[int, list[Chunk]] = {}  # open rows by creation number (dicts keep creation order)
        self._by_free: list[tuple[int, int]] = []  # (free tokens, creation number), ascending
        self._created = 0

    def add(self, chunk: Chunk) -> list[list[Chunk]]:
        """Place a chunk; return the rows completed by it."""
        n = len(chunk)
        if n > self.max_len:
            raise ValueError(f"chunk of {n} tokens exceeds max_len={self.max_len}")
        if not self.packing:
            return [[chunk]]
        done = []
        i = bisect_left(self._by_free, (n, -1))
        if i < len(self._by_free):
            free, key = self._by_free.pop(i)
        else:
            if len(self._rows) >= self.open_rows:
                done.append(self._rows.pop(self._by_free.pop(0)[1]))
            free, key = self.max_len, self._new_row()
        self._rows[key].append(chunk)
        free -= n
        if free < 3:  # no chunk ([CLS] x [SEP]) fits any more
            done.append(self._rows.pop(key))
        else:
            insort(self._by_free, (free, key))
        return done

    def flush(self) -> list[list[Chunk]]:
        """Emit every open row, fullest first."""
        rows = [self._rows[key] for _, key in self._by_free]
        self._rows, self._by_free = {}, []
        return rows

    def state(self) -> list:
        """Open rows in creation order as plain lists (JSON-serialisable)."""
        return [
            [[c.input_ids, c.term_flags, c.source, c.starts_document] for c in row] for row in self._rows.values()
        ]

    def load_state(self, state: list) -> None:
        self._rows, self._by_free = {}, []
        for row in state:
            key = self._new_row()
            self._rows[key] = [Chunk(*c) for c in row]
            self._by_free.append((self.max_len - sum(map(len, self._rows[key])), key))
        self._by_free.sort()

    def _new_row(self) -> int:
        key, self._created = self._created, self._created + 1
        self._rows[key] = []
        return key


def row_to_example(row: list[Chunk], cls_id: int, sep_id: int) -> StreamRow:
    """A packed row as a training example: `[CLS] doc [SEP]` per chunk, flags (0 on specials), document lengths."""
    input_ids, term_flags = [], []
    for chunk in row:
        input_ids.append(cls_id)
        input_ids += chunk.input_ids
        input_ids.append(sep_id)
        term_flags.append(0)
        term_flags += chunk.term_flags
        term_flags.append(0)
    return {INPUT_IDS: input_ids, TERM_FLAGS: term_flags, DOC_LENGTHS: [len(c) for c in row]}


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
