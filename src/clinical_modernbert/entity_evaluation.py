"""Masked-token accuracy on documents with entity mentions (`recipes/evaluate_mlm.py --annotations`).

Each document is tokenized with offsets and cut into windows, one row `[CLS] window [SEP]` of at most
`max_seq_length` tokens each. A token is inside a mention when its characters (without the leading whitespace a
byte-level BPE token carries) overlap the mention's. Two measures:
- fixed masking: the evaluation's usual masking of these rows (`MedicalMaskingCollator.for_evaluation`), its figures
  over the tokens inside any mention, outside every mention, and inside mentions of each type (a token inside
  overlapping mentions of two types counts for both);
- whole-mention recovery: each mention masked whole, one mention per row (all its tokens `[MASK]`, the rest of its
  window intact), labels on its tokens only: top-k per token, and the share of mentions whose every token is the
  top-1 prediction. A mention whose tokens cross a window border is not scored; it is counted.
Both come from `evaluation.predict_masked` (`Trainer.predict`: any number of processes, the gathered predictions on
each), the figures from `MaskedPredictions.figures` (the `evaluate` module).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from datasets import Dataset
from transformers import DataCollatorForTokenClassification

from .configs import EvaluationArguments
from .data.annotations import AnnotatedDocument, detect_format, read_annotations
from .data.rows import DOC_LENGTHS, INPUT_IDS
from .evaluation import MaskedPredictions, predict_masked
from .masking import MedicalMaskingCollator
from .metrics.mlm_topk_metrics import IGNORE_INDEX, PROTOCOLS

logger = logging.getLogger(__name__)

# Rows x positions per `predict_masked` call: Trainer.predict pads and concatenates its outputs batch by batch (a
# copy of all so far each time), so large sets are predicted a bounded slice at a time.
PREDICTION_TOKENS = 2**17


@dataclass
class EntityRows:
    """Annotated documents as evaluation rows, which tokens lie inside which mentions, and where each mention is."""

    dataset: Dataset  # input_ids, doc_lengths: one window of one document per row
    documents: int
    types: list[str]  # the entity types, sorted
    inside: np.ndarray  # (tokens of all rows, types): True where the token is inside a mention of the type
    row_starts: np.ndarray  # (rows + 1,): where each row's tokens start in `inside`
    mention_types: np.ndarray  # (mentions,): index in `types`
    mention_rows: np.ndarray  # (mentions,): the row holding all the mention's tokens; -1 when they cross a border
    mention_positions: list[np.ndarray]  # per mention: its tokens' positions in that row (empty when not scored)
    file: dict | None = None  # the annotation file read (path, format, documents cap); None for documents in memory


def build_entity_rows(eval_args: EvaluationArguments, tokenizer, max_seq_length: int) -> EntityRows:
    """The rows of `eval_args.annotations` (its first `max_annotated_documents` documents)."""
    documents = read_annotations(eval_args.annotations)[: eval_args.max_annotated_documents]
    rows = entity_rows(documents, tokenizer, max_seq_length)
    rows.file = {"path": eval_args.annotations, "format": detect_format(eval_args.annotations),
                 "max_annotated_documents": eval_args.max_annotated_documents}
    mentions = dict(zip(rows.types, np.bincount(rows.mention_types, minlength=len(rows.types)).tolist()))
    logger.info("Data: %s (%s), %d documents, %d rows of up to %d tokens, mentions %s", eval_args.annotations,
                rows.file["format"], rows.documents, len(rows.dataset), max_seq_length, mentions)
    return rows


def annotations_data(rows: EntityRows, max_seq_length: int) -> dict:
    """The results file's `data` when the annotated documents are the evaluated text: the annotation file (as its one
    source), its documents, rows and tokens."""
    return {
        "split": "annotations",
        "sources": {"annotations": rows.file},
        "documents": rows.documents,
        "max_seq_length": max_seq_length,
        "rows": len(rows.dataset),
        "tokens": int(rows.row_starts[-1]),
    }


def entity_rows(documents: list[AnnotatedDocument], tokenizer, max_seq_length: int) -> EntityRows:
    """`documents` tokenized (fast tokenizer, offsets) and cut into rows of at most `max_seq_length` tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"The entity evaluation needs a fast tokenizer (offsets); got {type(tokenizer).__name__}")
    body = max_seq_length - 2
    types = sorted({m.type for document in documents for m in document.mentions})
    type_index = {kind: i for i, kind in enumerate(types)}
    encodings = tokenizer([d.text for d in documents], add_special_tokens=False, return_offsets_mapping=True)
    rows, inside_parts, mention_types, mention_rows, mention_positions = [], [], [], [], []
    edge = np.zeros((1, len(types)), dtype=bool)  # [CLS] and [SEP]
    for document, ids, offsets in zip(documents, encodings[INPUT_IDS], encodings["offset_mapping"]):
        starts, ends = _token_spans(document.text, offsets)
        inside = np.zeros((len(ids), len(types)), dtype=bool)
        for mention in document.mentions:
            tokens = np.flatnonzero((starts < ends) & (starts < mention.end) & (ends > mention.start))
            if not len(tokens):
                raise ValueError(f"Document {document.id}: no token of the tokenizer covers the mention at characters "
                                 f"{mention.start}-{mention.end}; every mention needs tokens to be scored")
            inside[tokens, type_index[mention.type]] = True
            mention_types.append(type_index[mention.type])
            windows = tokens // body
            cut = windows[0] != windows[-1]
            mention_rows.append(-1 if cut else len(rows) + int(windows[0]))
            mention_positions.append(np.zeros(0, dtype=np.int64) if cut else tokens - windows[0] * body + 1)
        for start in range(0, max(len(ids), 1), body):
            window = ids[start : start + body]
            rows.append({INPUT_IDS: [tokenizer.cls_token_id, *window, tokenizer.sep_token_id],
                         DOC_LENGTHS: [len(window) + 2]})
            inside_parts += [edge, inside[start : start + body], edge]
    lengths = [len(row[INPUT_IDS]) for row in rows]
    return EntityRows(
        dataset=Dataset.from_list(rows),
        documents=len(documents),
        types=types,
        inside=np.concatenate(inside_parts) if inside_parts else np.zeros((0, len(types)), dtype=bool),
        row_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        mention_types=np.array(mention_types, dtype=np.int64),
        mention_rows=np.array(mention_rows, dtype=np.int64),
        mention_positions=mention_positions,
    )


def _token_spans(text: str, offsets: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Each token's `[start, end)` characters, leading whitespace left out (empty for a whitespace-only token)."""
    starts, ends = np.array(offsets, dtype=np.int64).reshape(-1, 2).T.copy()
    for i, (start, end) in enumerate(offsets):
        while start < end and text[start].isspace():
            start += 1
        starts[i] = start
    return starts, ends


def whole_mention_dataset(rows: EntityRows, mask_token_id: int) -> tuple[Dataset, np.ndarray]:
    """One row per scored mention: its window with the mention's tokens `[MASK]` and labelled, and the mentions."""
    scored = np.flatnonzero(rows.mention_rows >= 0)
    windows, examples = rows.dataset[INPUT_IDS], []
    for mention in scored:
        input_ids = np.array(windows[rows.mention_rows[mention]])
        labels = np.full(len(input_ids), IGNORE_INDEX)
        positions = rows.mention_positions[mention]
        labels[positions] = input_ids[positions]
        input_ids[positions] = mask_token_id
        examples.append({INPUT_IDS: input_ids.tolist(), "labels": labels.tolist()})
    return Dataset.from_list(examples), scored


def entity_figures(model, tokenizer, rows: EntityRows, eval_args: EvaluationArguments, top_k: list[int],
                   output_dir: str) -> dict:
    """The `entities` section of the results file: counts and figures, no text (see `format_entity_tables`)."""
    mentions = np.bincount(rows.mention_types, minlength=len(rows.types))
    section = {
        **({"annotations": rows.file} if rows.file else {}),
        "documents": rows.documents,
        "rows": len(rows.dataset),
        "tokens": int(rows.row_starts[-1]),
        "mentions": dict(zip(rows.types, mentions.tolist())),
    }
    collator = MedicalMaskingCollator.for_evaluation(tokenizer, eval_args.mlm_probability, eval_args.seed)
    predictions, where = _labelled_positions(model, tokenizer, rows.dataset, collator, eval_args, top_k, output_dir)
    flags = rows.inside[rows.row_starts[where[0]] + where[1]]  # (labelled positions, types)
    section["fixed_masking"] = {
        "inside": predictions.figures(flags.any(1)[:, None], top_k),
        "outside": predictions.figures(~flags.any(1)[:, None], top_k),
        "types": {kind: predictions.figures(flags[:, i, None], top_k) for i, kind in enumerate(rows.types)},
    }

    dataset, scored = whole_mention_dataset(rows, tokenizer.mask_token_id)
    collator = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE_INDEX)
    predictions, where = _labelled_positions(model, tokenizer, dataset, collator, eval_args, top_k, output_dir)
    mention = scored[where[0]]  # the mention of each labelled position
    wrong = predictions.top_ids[:, 0, 0] != predictions.labels[:, 0]
    recovered = np.bincount(where[0], weights=wrong.astype(float), minlength=len(scored)) == 0  # per scored mention
    cut = rows.mention_rows < 0

    def recovery(selected: np.ndarray) -> dict:  # selected: (mentions,)
        return {
            **predictions.figures(selected[mention][:, None], top_k),
            "mentions": int(selected[scored].sum()),
            "all_tokens_top_1": float(recovered[selected[scored]].mean()) if selected[scored].any() else None,
            "mentions_across_windows": int((selected & cut).sum()),
        }

    section["whole_mention"] = {
        "all": recovery(np.ones(len(cut), dtype=bool)),
        "types": {kind: recovery(rows.mention_types == i) for i, kind in enumerate(rows.types)},
    }
    return section


def _labelled_positions(model, tokenizer, dataset: Dataset, collator, eval_args: EvaluationArguments,
                        top_k: list[int], output_dir: str) -> tuple[MaskedPredictions, tuple[np.ndarray, np.ndarray]]:
    """`predict_masked` over `dataset`, a slice at a time, kept at its labelled positions only: predictions of one
    position per row, and each position's (dataset row, position)."""
    if not len(dataset):
        empty = np.zeros(0, dtype=np.int64)
        return MaskedPredictions(np.zeros((0, 1, top_k[-1]), dtype=np.int64), empty[:, None], None), (empty, empty)
    parts = []
    step = max(1, PREDICTION_TOKENS // max(len(ids) for ids in dataset[INPUT_IDS]))
    for first in range(0, len(dataset), step):
        chunk = dataset.select(range(first, min(first + step, len(dataset))))
        predicted = predict_masked(model, tokenizer, chunk, collator, eval_args, output_dir)
        row, position = np.nonzero(predicted.labels != IGNORE_INDEX)
        mask = None if predicted.mask_input is None else predicted.mask_input[row, position][:, None]
        parts.append((predicted.top_ids[row, position][:, None], predicted.labels[row, position][:, None], mask,
                      row + first, position))
    top_ids, labels, mask, row, position = (None if part[0] is None else np.concatenate(part) for part in zip(*parts))
    return MaskedPredictions(top_ids, labels, mask), (row, position)


def format_entity_tables(section: dict, top_k: list[int]) -> str:
    """The `entities` section as two Markdown tables: fixed masking by mention, whole-mention recovery."""
    ks = " | ".join(f"Top-{k}" for k in top_k)
    lines = [f"| counted positions | tokens | positions | {ks} |", "|" + "---|" * (3 + len(top_k))]
    fixed = section["fixed_masking"]
    groups = [("inside any mention", fixed["inside"]), ("outside every mention", fixed["outside"]),
              *((f"inside {kind}", figures) for kind, figures in fixed["types"].items())]
    for prefix, label in PROTOCOLS:
        for group, figures in groups:
            if f"{prefix}num_positions" in figures:
                lines.append(f"| {label} | {group} | {figures[f'{prefix}num_positions']} | "
                             f"{_cells(figures, prefix, top_k)} |")
    lines += ["", f"| mentions masked whole | mentions | tokens | {ks} | every token top-1 |",
              "|" + "---|" * (4 + len(top_k))]
    recovery = section["whole_mention"]
    cut = []
    for kind, figures in [("all", recovery["all"]), *recovery["types"].items()]:
        share = figures["all_tokens_top_1"]
        lines.append(f"| {kind} | {figures['mentions']} | {figures['num_positions']} | {_cells(figures, '', top_k)} | "
                     f"{'n/a' if share is None else f'{100 * share:.2f}'} |")
        if figures["mentions_across_windows"] and kind != "all":
            cut.append(f"{figures['mentions_across_windows']} {kind}")
    if cut:
        lines.append(f"\nNot scored whole (tokens across a window border): {', '.join(cut)} mention(s)")
    return "\n".join(lines)


def _cells(figures: dict, prefix: str, top_k: list[int]) -> str:
    values = [figures.get(f"{prefix}top_{k}") for k in top_k]
    return " | ".join("n/a" if value is None else f"{100 * value:.2f}" for value in values)

