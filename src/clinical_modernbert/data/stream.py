"""The streaming corpus: mix sources, hold out by hash, tokenize, flag medical terms, pack; resumable.

Reading, mixing and sharding use `datasets` (`load_dataset(streaming=True)`, `interleave_datasets`,
`split_dataset_by_node`). Tokenizing, flagging and packing happen here, in blocks of documents, because packing
carries open rows from one block to the next, which a stateless `IterableDataset.map` cannot. A thread tokenizes the
next block while the current one is flagged and packed (`map_ahead`).

The training stream never ends: when this process's shard of the documents ends, it starts the next pass (epoch)
itself, so processes whose shards differ in length never disagree on when an epoch ends, and every optimizer step
gets its full gradient accumulation. The evaluation rows are finite and read each document once.

`PackedStream` holds the shared reading and packing; `TrainingStream` (endless, resumable) and `EvaluationRows`
(the held-out documents, or all of them) are its two roles.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import ClassVar

import torch
import xxhash
from datasets import Dataset, interleave_datasets
from datasets.distributed import split_dataset_by_node

from ..configs import DataArguments, SourceConfig
from ..tokenization import DocumentEncoder
from .map_ahead import map_ahead
from .packing import BestFitPacker, chunk_document, row_to_example
from .rows import DOC_LENGTHS, INPUT_IDS, STREAM_POSITION, STREAM_STATS, TERM_FLAGS
from .sources import format_texts, load_source, next_row

logger = logging.getLogger(__name__)

# Per-source counters carried by every row (summed by the collator, totalled by the trainer): the documents and
# tokens in the row itself, and the documents skipped or repaired while reading up to it.
STAT_FIELDS = ("documents", "tokens", "skipped_empty", "skipped_non_string", "utf8_replaced")
DOCUMENTS, TOKENS, SKIPPED_EMPTY, SKIPPED_NON_STRING, UTF8_REPLACED = range(len(STAT_FIELDS))
# Characters per tokenizer call (~250k tokens of English): large enough that handing blocks between threads costs
# little, small enough to start fast.
BLOCK_CHARS = 1_000_000


def materialise(stream: EvaluationRows) -> Dataset | None:
    """The rows of a finite stream (an evaluation set) as a `Dataset`, without the stream's counters; None if empty."""
    rows = [{key: row[key] for key in (INPUT_IDS, TERM_FLAGS, DOC_LENGTHS)} for row in stream]
    return Dataset.from_list(rows) if rows else None


def _as_documents(batch: dict[str, list], source: SourceConfig, index: int) -> dict[str, list]:
    texts = format_texts(source, batch)
    return {"text": texts, "source": [index] * len(texts)}


def is_held_out(text: str, eval_fraction: float) -> bool:
    """Deterministic held-out choice by hash of the document text."""
    return eval_fraction > 0 and xxhash.xxh64_intdigest(text.encode("utf-8", "replace")) < eval_fraction * 2**64


class PackedStream(torch.utils.data.IterableDataset):
    """Packed rows from the source mixture (a `rows.StreamRow` each: `input_ids`, `term_flags`, `doc_lengths`,
    `stream_stats`), documents tokenized in blocks of about `block_chars` characters. The shared part of
    `TrainingStream` and `EvaluationRows`, which say which documents are read, how often, and where it ends."""

    stopping_strategy: ClassVar[str]  # of `interleave_datasets`
    max_documents: int | None = None  # the stream ends after this many documents

    def __init__(self, data_args: DataArguments, tokenizer, lexicon=None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, block_chars: int = BLOCK_CHARS):
        if not data_args.sources:
            raise ValueError("No data sources configured (data argument `sources` is empty).")
        self.sources: list[SourceConfig] = data_args.sources
        self.data_args, self.tokenizer, self.lexicon = data_args, tokenizer, lexicon
        self.encoder = DocumentEncoder(tokenizer)
        self.seed, self.rank, self.world_size, self.block_chars = seed, rank, world_size, block_chars
        self._documents = self._build_documents()
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
                stopping_strategy=self.stopping_strategy,
            )
        )
        if self.world_size > 1:
            mixed = split_dataset_by_node(mixed, rank=self.rank, world_size=self.world_size)
        return mixed

    def __iter__(self):
        packer = BestFitPacker(self.data_args.max_seq_length, packing=self.data_args.packing)
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        skip_rows, block_index = self._start(packer)
        read_stats = self._zero_stats()  # skipped and repaired documents, carried by the next row
        for (start, block, block_stats, last), encodings in map_ahead(self._encode, self._blocks()):
            self._remember(block_index, start, packer)
            read_stats = [[a + b for a, b in zip(counts, more)] for counts, more in zip(read_stats, block_stats)]
            rows = []
            for chunk in self._chunks(block, encodings):
                rows.extend(packer.add(chunk))
            if last:
                rows.extend(packer.flush())
            for k, row in enumerate(rows):
                if k >= skip_rows:  # rows before were trained before the checkpoint, counters included
                    example = row_to_example(row, cls_id, sep_id)
                    example[STREAM_STATS] = self._row_stats(row, read_stats)
                    yield self._with_position(example, block_index, k)
                read_stats = self._zero_stats()
            skip_rows = 0
            block_index += 1

    # -- what each role decides ----------------------------------------------------------------------------------
    def _start(self, packer: BestFitPacker) -> tuple[int, int]:
        """Set up an iteration; the rows to skip in the first block and that block's index."""
        return 0, 0

    def _block_start(self) -> dict | None:
        """Where the next block starts (to resume from), or None."""
        return None

    def _remember(self, block_index: int, start: dict | None, packer: BestFitPacker) -> None:
        """Note where block `block_index` started."""

    def _with_position(self, example: dict, block_index: int, row: int) -> dict:
        return example

    def _next_pass(self, taken_in_pass: int) -> bool:
        """The documents ended: start another pass over them (True), or end the stream (False)."""
        return False

    def _keeps(self, text: str) -> bool:
        """Whether this role reads the document."""
        raise NotImplementedError

    def _prepare(self, ids: list[int], flags: list[int]) -> tuple[list[int], list[int]]:
        """A document's ids and flags as this role packs them."""
        return ids, flags

    # -- shared -----------------------------------------------------------------------------------------------------
    def _zero_stats(self) -> list[list[int]]:
        return [[0] * len(STAT_FIELDS) for _ in self.sources]

    def _row_stats(self, row: list, read_stats: list[list[int]]) -> list[list[int]]:
        """Counters of one row: its documents and tokens per source, plus the reading counters it carries."""
        stats = [list(counts) for counts in read_stats]
        for chunk in row:
            stats[chunk.source][DOCUMENTS] += chunk.starts_document
            stats[chunk.source][TOKENS] += len(chunk)
        return stats

    def _blocks(self):
        """Blocks of the documents this role reads: (where the block starts, [(text, source)], skipped-document
        counts, whether it is the last block)."""
        documents = iter(self._documents)
        taken = taken_in_pass = 0
        last = False
        while not last:
            start = self._block_start()
            block, stats, chars = [], self._zero_stats(), 0
            while chars < self.block_chars and not last:
                row = next_row(documents, self.sources)
                if row is None:
                    if not self._next_pass(taken_in_pass):
                        last = True
                        break
                    taken_in_pass = 0
                    documents = iter(self._documents)
                    continue
                text = self._checked_text(row, stats)
                if text is None or not self._keeps(text):
                    continue
                block.append((text, row["source"]))
                taken, taken_in_pass, chars = taken + 1, taken_in_pass + 1, chars + len(text)
                last = self.max_documents is not None and taken >= self.max_documents
            yield start, block, stats, last

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

    def _chunks(self, block: list[tuple[str, int]], encodings: list):
        if self.lexicon is not None:
            texts = [text for text, _ in block]
            encodings = self.encoder.map_characters(texts, encodings)
            flags = self.lexicon.flags(texts, encodings)
        all_ids = [e.ids for e in encodings]
        if self.lexicon is None:
            flags = [[0] * len(ids) for ids in all_ids]
        for (_, source), ids, doc_flags in zip(block, all_ids, flags):
            ids, doc_flags = self._prepare(ids, doc_flags)
            yield from chunk_document(ids, doc_flags, source, self.data_args.max_seq_length)


class TrainingStream(PackedStream):
    """The endless training stream: this process's shard of the documents not held out, smaller sources oversampled
    by their weights (`all_exhausted`), pass after pass (`passes` ends it after that many; default: never).

    Rows carry their `stream_position`; `state_dict(position)` returns what `load_state_dict` needs to continue right
    after that row (only the last `keep_snapshots` blocks are remembered).
    """

    stopping_strategy = "all_exhausted"

    def __init__(self, data_args: DataArguments, tokenizer, lexicon=None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, block_chars: int = BLOCK_CHARS, keep_snapshots: int = 64,
                 passes: int | None = None):
        super().__init__(data_args, tokenizer, lexicon, seed, rank, world_size, block_chars)
        self.keep_snapshots, self.passes = keep_snapshots, passes
        self.epoch = 0
        self._snapshots: OrderedDict[int, dict] = OrderedDict()
        self._resume: dict | None = None

    def _keeps(self, text: str) -> bool:
        return not is_held_out(text, self.data_args.eval_fraction)

    def _start(self, packer: BestFitPacker) -> tuple[int, int]:
        if self._resume is None:
            return 0, 0
        state, self._resume = self._resume, None
        self.epoch = state["epoch"]
        self._documents.set_epoch(self.epoch)
        self._documents.load_state_dict(state["documents"])
        packer.load_state(state["packer"])
        return state["skip_rows"], state["block_index"]

    def _block_start(self) -> dict:
        return {"epoch": self.epoch, "documents": self._documents.state_dict()}

    def _with_position(self, example: dict, block_index: int, row: int) -> dict:
        example[STREAM_POSITION] = [block_index, row]
        return example

    def _next_pass(self, taken_in_pass: int) -> bool:
        """The next pass, reshuffled (`set_epoch`; `datasets`' `repeat` would replay the same order)."""
        if self.passes is not None and self.epoch + 1 >= self.passes:
            return False
        if not taken_in_pass:
            where = f"process {self.rank} of {self.world_size}" if self.world_size > 1 else "the sources"
            raise ValueError(
                f"No training document in a whole pass over {where} ({[s.name for s in self.sources]}): every "
                f"document is empty, skipped or held out (eval_fraction={self.data_args.eval_fraction}); check each "
                "source's text_field or template against its rows."
            )
        self.epoch += 1
        self._documents.set_epoch(self.epoch)
        return True

    def _remember(self, block_index: int, start: dict, packer: BestFitPacker) -> None:
        self._snapshots[block_index] = {**start, "packer": packer.state()}
        while len(self._snapshots) > self.keep_snapshots:
            self._snapshots.popitem(last=False)

    def state_dict(self, position: list[int]) -> dict:
        """What `load_state_dict` needs to continue right after the row at `position`."""
        block_index, row = position
        if block_index not in self._snapshots:
            raise KeyError(f"stream position {position} is older than the {self.keep_snapshots} remembered blocks")
        return {"block_index": block_index, "skip_rows": row + 1, **self._snapshots[block_index]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict` at the next iteration."""
        if self.data_args.shuffle_buffer_size:
            logger.warning("Data: datasets does not save shuffle buffers: resuming a shuffled stream loses up to "
                           "%d documents per source and is not row-exact", self.data_args.shuffle_buffer_size)
        self._resume = state


class EvaluationRows(PackedStream):
    """Finite evaluation rows: every document of every source read once (`all_exhausted_without_replacement`);
    with `held_out` (default) only the held-out ones, the first `max_eval_documents` of them, each cut to
    `eval_tokens_per_document` (counted in `eval_counts`)."""

    stopping_strategy = "all_exhausted_without_replacement"

    def __init__(self, data_args: DataArguments, tokenizer, lexicon=None, held_out: bool = True, seed: int = 0,
                 block_chars: int = BLOCK_CHARS):
        super().__init__(data_args, tokenizer, lexicon, seed, block_chars=block_chars)
        self.held_out = held_out
        self.max_documents = data_args.max_eval_documents if held_out else None
        # documents taken, those cut to `eval_tokens_per_document`, and the tokens cut off
        self.eval_counts = {"documents": 0, "cut": 0, "tokens_cut": 0}

    def _keeps(self, text: str) -> bool:
        return not self.held_out or is_held_out(text, self.data_args.eval_fraction)

    def documents(self):
        """The token ids (no special tokens) of each document these rows are read from, in order, whole: neither cut
        to `eval_tokens_per_document` nor packed (the long-context probe's documents)."""
        for _, encodings in map_ahead(self._encode, self._blocks()):
            for encoding in encodings:
                yield encoding.ids

    def _prepare(self, ids: list[int], flags: list[int]) -> tuple[list[int], list[int]]:
        """A held-out document cut to `eval_tokens_per_document` (one 5 MB note would otherwise be thousands of
        rows), counted."""
        if not self.held_out:
            return ids, flags
        limit = self.data_args.eval_tokens_per_document
        self.eval_counts["documents"] += 1
        if len(ids) > limit:
            self.eval_counts["cut"] += 1
            self.eval_counts["tokens_cut"] += len(ids) - limit
        return ids[:limit], flags[:limit]
