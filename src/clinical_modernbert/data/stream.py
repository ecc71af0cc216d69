"""The streaming corpus: mix sources, hold out by hash, tokenize, flag medical terms, pack; resumable.

Reading, mixing and sharding use `datasets` (`load_dataset(streaming=True)`, `interleave_datasets`,
`split_dataset_by_node`). Tokenizing, flagging and packing happen here, in blocks of documents, because packing
carries open rows from one block to the next, which a stateless `IterableDataset.map` cannot. A thread tokenizes the
next block while the current one is flagged and packed (`map_ahead`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
import xxhash
from datasets import Dataset, interleave_datasets
from datasets.distributed import split_dataset_by_node

from ..configs import DataArguments, SourceConfig
from ..tokenization import DocumentEncoder
from .packing import BestFitPacker, chunk_document, row_to_example
from .map_ahead import map_ahead
from .sources import format_texts, load_source

logger = logging.getLogger(__name__)

# Per-source counters carried by every row (summed by the collator, totalled by the trainer).
STAT_FIELDS = ("documents", "tokens", "skipped_empty", "skipped_non_string", "utf8_replaced")
DOCUMENTS, TOKENS, SKIPPED_EMPTY, SKIPPED_NON_STRING, UTF8_REPLACED = range(len(STAT_FIELDS))
# Characters per tokenizer call (~250k tokens of English): large enough that handing blocks between threads costs
# little, small enough to start fast.
BLOCK_CHARS = 1_000_000


def materialise(stream: "PackedStream") -> Dataset | None:
    """The rows of a finite stream (an evaluation set) as a `Dataset`, without the stream's counters; None if empty."""
    rows = [{key: row[key] for key in ("input_ids", "medical_mask", "doc_lengths")} for row in stream]
    return Dataset.from_list(rows) if rows else None


def _as_documents(batch: dict[str, list], source: SourceConfig, index: int) -> dict[str, list]:
    texts = format_texts(source, batch)
    return {"text": texts, "source": [index] * len(texts)}


def is_held_out(text: str, eval_fraction: float) -> bool:
    """Deterministic held-out choice by hash of the document text."""
    return eval_fraction > 0 and xxhash.xxh64_intdigest(text.encode("utf-8", "replace")) < eval_fraction * 2**64


class PackedStream(torch.utils.data.IterableDataset):
    """Packed training (or held-out) rows from the source mixture.

    Each row is `{"input_ids", "medical_mask", "doc_lengths", "stream_stats"[, "stream_position"]}`. Training rows
    carry their `stream_position`; `state_dict(position)` returns what `load_state_dict` needs to continue right
    after that row (only the last `keep_snapshots` blocks are remembered). Documents are tokenized in blocks of
    about `block_chars` characters.
    """

    def __init__(
        self,
        data_args: DataArguments,
        tokenizer,
        lexicon=None,
        split: str = "train",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        block_chars: int = BLOCK_CHARS,
        keep_snapshots: int = 64,
    ):
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if not data_args.sources:
            raise ValueError("No data sources configured (data argument `sources` is empty).")
        self.sources: list[SourceConfig] = data_args.sources
        self.data_args, self.tokenizer, self.lexicon, self.split = data_args, tokenizer, lexicon, split
        self.encoder = DocumentEncoder(tokenizer)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.block_chars, self.keep_snapshots = block_chars, keep_snapshots
        self.epoch = 0
        self._documents = self._build_documents()
        self._snapshots: OrderedDict[int, dict] = OrderedDict()
        self._resume: dict | None = None
        self._epoch_offset = 0
        self._warned: set[int] = set()

    @property
    def n_sources(self) -> int:
        return len(self.sources)

    def _build_documents(self):
        streams = []
        for index, source in enumerate(self.sources):
            stream = load_source(source)
            if self.data_args.shuffle_buffer_size:
                stream = stream.shuffle(seed=self.seed, buffer_size=self.data_args.shuffle_buffer_size)
            streams.append(
                stream.map(
                    _as_documents,
                    batched=True,
                    fn_kwargs={"source": source, "index": index},
                    remove_columns=list(stream.features) if stream.features else None,
                )
            )
        total = sum(s.weight for s in self.sources)
        mixed = (
            streams[0]
            if len(streams) == 1
            else interleave_datasets(
                streams,
                probabilities=[s.weight / total for s in self.sources],
                seed=self.seed,
                stopping_strategy="all_exhausted",
            )
        )
        if self.world_size > 1:
            mixed = split_dataset_by_node(mixed, rank=self.rank, world_size=self.world_size)
        return mixed

    def set_epoch(self, epoch: int) -> None:
        # A resumed Trainer counts epochs of a stream from 0 again; the offset keeps the stream's own epoch.
        self.epoch = epoch + self._epoch_offset
        self._documents.set_epoch(self.epoch)

    def __iter__(self):
        packer = BestFitPacker(self.data_args.max_seq_length, packing=self.data_args.packing)
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        stats = [[0] * len(STAT_FIELDS) for _ in self.sources]
        skip_rows, block_index = 0, 0
        if self._resume is not None:
            self._documents.load_state_dict(self._resume["documents"])
            packer.load_state(self._resume["packer"])
            skip_rows, block_index = self._resume["skip_rows"], self._resume["block_index"]
            self._resume = None
        for (documents_state, block, block_stats, last), encodings in map_ahead(self._encode, self._blocks()):
            if self.split == "train":
                self._remember(block_index, documents_state, packer)
            for counts, more in zip(stats, block_stats):
                counts[:] = [a + b for a, b in zip(counts, more)]
            rows = []
            for chunk in self._chunks(block, encodings, stats):
                rows.extend(packer.add(chunk))
            if last:
                rows.extend(packer.flush())
            for k, row in enumerate(rows):
                if k < skip_rows:  # trained before the checkpoint, counters included
                    stats = [[0] * len(STAT_FIELDS) for _ in self.sources]
                    continue
                example = row_to_example(row, cls_id, sep_id)
                example["stream_stats"], stats = stats, [[0] * len(STAT_FIELDS) for _ in self.sources]
                if self.split == "train":
                    example["stream_position"] = [block_index, k]
                yield example
            skip_rows = 0
            block_index += 1

    def _blocks(self):
        """Blocks of documents of this split: (documents state at the block's start, [(text, source)], skipped-document
        counts, whether it is the last block)."""
        documents = iter(self._documents)
        held_out_seen, limit = 0, self.data_args.max_eval_documents
        while True:
            state = self._documents.state_dict() if self.split == "train" else None
            block, stats, chars = [], [[0] * len(STAT_FIELDS) for _ in self.sources], 0
            for row in documents:
                text = self._checked_text(row, stats)
                if text is None or is_held_out(text, self.data_args.eval_fraction) != (self.split == "eval"):
                    continue
                block.append((text, row["source"]))
                if self.split == "eval":
                    held_out_seen += 1
                    if held_out_seen >= limit:
                        break
                chars += len(text)
                if chars >= self.block_chars:
                    break
            last = not block or (self.split == "eval" and held_out_seen >= limit)
            yield state, block, stats, last
            if last:
                return

    def _encode(self, block: tuple) -> list:
        _, documents, _, _ = block
        return self.encoder.encode([text for text, _ in documents])

    def _checked_text(self, row: dict, stats) -> str | None:
        text, counts = row["text"], stats[row["source"]]
        if not isinstance(text, str):
            counts[SKIPPED_NON_STRING] += 1
            if row["source"] not in self._warned:
                self._warned.add(row["source"])
                name = self.sources[row["source"]].name
                logger.warning("Source %r: skipping documents whose text is %s (counted)", name, type(text).__name__)
            return None
        if not text.strip():
            counts[SKIPPED_EMPTY] += 1
            return None
        if "\ufffd" in text:
            counts[UTF8_REPLACED] += 1
        return text

    def _chunks(self, block: list[tuple[str, int]], encodings: list, stats):
        if self.lexicon is not None:
            texts = [text for text, _ in block]
            encodings = self.encoder.map_characters(texts, encodings)
            flags = self.lexicon.flags(texts, encodings)
        all_ids = [e.ids for e in encodings]
        if self.lexicon is None:
            flags = [[0] * len(ids) for ids in all_ids]
        for (_, source), ids, doc_flags in zip(block, all_ids, flags):
            counts = stats[source]
            counts[DOCUMENTS] += 1
            for chunk in chunk_document(ids, doc_flags, source, self.data_args.max_seq_length):
                counts[TOKENS] += len(chunk)
                yield chunk

    def _remember(self, block_index: int, documents_state: dict, packer: BestFitPacker) -> None:
        self._snapshots[block_index] = {"documents": documents_state, "packer": packer.state()}
        while len(self._snapshots) > self.keep_snapshots:
            self._snapshots.popitem(last=False)

    def state_dict(self, position: list[int]) -> dict:
        """What `load_state_dict` needs to continue right after the row at `position`."""
        block_index, row = position
        if block_index not in self._snapshots:
            raise KeyError(f"stream position {position} is older than the {self.keep_snapshots} remembered blocks")
        snapshot = self._snapshots[block_index]
        return {"block_index": block_index, "skip_rows": row + 1, "epoch": self.epoch, **snapshot}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict` at the next iteration."""
        if self.data_args.shuffle_buffer_size:
            logger.warning("Data: datasets does not save shuffle buffers: resuming a shuffled stream loses up to "
                           "%d documents per source and is not row-exact", self.data_args.shuffle_buffer_size)
        self._epoch_offset = 0
        self.set_epoch(state["epoch"])
        self._epoch_offset = state["epoch"]
        self._resume = state
