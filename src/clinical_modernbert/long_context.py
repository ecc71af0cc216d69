"""The long-context probe of `recipes/evaluate_mlm.py`: the same masked tokens near the end of long documents,
predicted with the preceding context cut to each length.

For a document of ids d and a context length L the row is `[CLS] + d[-(L-2):] + [SEP]`. The scored positions lie in
the last `probe_tokens` tokens of d, drawn at `mlm_probability` from (seed, the document's ids) only, and each is
`[MASK]` in the input (the answer is never there); the rest of the context is left as it is. So every length scores
the same tokens, in the same near context, and only the distant context changes: a model that uses it gains as L
grows. The documents are those the evaluation reads (`EvaluationRows`: held-out, or all), whole.
"""

from __future__ import annotations

import logging
from contextlib import closing

import numpy as np
import torch
import xxhash
from datasets import Dataset
from transformers import DataCollatorForTokenClassification

from .configs import DataArguments, EvaluationArguments
from .data.stream import EvaluationRows
from .evaluation import predict_masked
from .masking import placeholder_ids
from .metrics.mlm_topk_metrics import IGNORE_INDEX, MLMTopKMetrics

logger = logging.getLogger(__name__)

TOKENS_PER_BATCH = 512  # a batch of length L holds per_device_eval_batch_size * 512 / L rows (at least 1)


def run_long_context_probe(model, tokenizer, data_args: DataArguments, eval_args: EvaluationArguments,
                           output_dir: str) -> dict:
    """The probe's results section (see `LongContextProbe.measure`) on the long documents of `data_args.sources`."""
    check_context_lengths(eval_args.context_lengths, model.config.max_position_embeddings)
    documents, lengths, dropped = read_probe_documents(data_args, eval_args, tokenizer)
    return LongContextProbe(tokenizer, eval_args).measure(model, documents, lengths, dropped, output_dir)


def check_context_lengths(lengths: list[int] | None, max_positions: int) -> None:
    """A ValueError unless there are context lengths, all within the model's `max_position_embeddings`."""
    if not lengths:
        raise ValueError("The long-context probe needs context_lengths, e.g. --context_lengths 512 1024 2048")
    if lengths[-1] > max_positions:
        raise ValueError(f"context_lengths {[n for n in lengths if n > max_positions]} exceed the model's "
                         f"max_position_embeddings={max_positions}; set context_lengths to at most {max_positions}")


def read_probe_documents(data_args: DataArguments, eval_args: EvaluationArguments,
                         tokenizer) -> tuple[list[list[int]], list[int], list[int]]:
    """The probe's documents, the kept lengths and the dropped ones (longer than every document read).

    Documents are read as the evaluation reads them (held-out, or all) until `max_probe_documents` reach the longest
    length; the probe's are the first `max_probe_documents` at least as long as the longest kept length (tokens
    counted with `[CLS]` and `[SEP]`).
    """
    lengths, cap = eval_args.context_lengths, eval_args.max_probe_documents
    reaching = [0] * len(lengths)  # documents read at least as long as each length
    candidates, longest = [], 0
    stream = EvaluationRows(data_args, tokenizer, held_out=eval_args.split == "held_out", seed=eval_args.seed)
    with closing(stream.documents()) as documents:
        for ids in documents:
            size = len(ids) + 2
            longest = max(longest, size)
            reached = [i for i, length in enumerate(lengths) if length <= size]
            if any(reaching[i] < cap for i in reached):  # it may be among the first `cap` of some length
                candidates.append(ids)
            for i in reached:
                reaching[i] += 1
            if reaching[-1] >= cap:
                break
    kept = [length for length in lengths if length <= longest]
    dropped = [length for length in lengths if length > longest]
    if not kept:
        raise ValueError(
            f"Long-context probe: no document of {[s.name for s in data_args.sources]} ({eval_args.split} split) is "
            f"as long as the shortest of context_lengths {lengths}: the longest has {longest} tokens with [CLS] and "
            f"[SEP]. Set context_lengths to at most {longest}, or read more documents (split: all, "
            "max_eval_documents)."
        )
    if dropped:
        logger.info("Long context: dropped lengths %s: no document is that long (the longest has %d tokens)",
                    dropped, longest)
    chosen = [ids for ids in candidates if len(ids) + 2 >= kept[-1]][:cap]
    logger.info("Long context: %d documents of at least %d tokens, lengths %s", len(chosen), kept[-1], kept)
    return chosen, kept, dropped


class LongContextProbe:
    """Rows and figures of the probe for one tokenizer and `EvaluationArguments` (seed, rate, probe_tokens, top_k)."""

    def __init__(self, tokenizer, eval_args: EvaluationArguments):
        self.tokenizer, self.eval_args = tokenizer, eval_args
        # never scored, like the evaluation's masking: special tokens and de-identification placeholders
        self._never = np.asarray([*tokenizer.all_special_ids, *placeholder_ids(tokenizer)], dtype=np.int64)

    def scored_positions(self, ids: list[int]) -> np.ndarray:
        """Indexes into `ids` of the scored tokens: in the last `probe_tokens`, each drawn at `mlm_probability` by a
        generator seeded by (seed, the document's ids), never a special or placeholder token."""
        ids = np.asarray(ids, dtype=np.int64)
        start = max(len(ids) - self.eval_args.probe_tokens, 0)
        key = xxhash.xxh64_intdigest(ids.tobytes(), seed=self.eval_args.seed)
        draws = torch.rand(len(ids) - start, generator=torch.Generator().manual_seed(key), dtype=torch.float64)
        chosen = (draws.numpy() < self.eval_args.mlm_probability) & ~np.isin(ids[start:], self._never)
        return start + np.flatnonzero(chosen)

    def rows(self, documents: list[list[int]], length: int) -> Dataset:
        """One row per document: `[CLS]` + its last `length - 2` tokens + `[SEP]`, scored tokens `[MASK]`ed in
        `input_ids` and given in `labels` (-100 elsewhere)."""
        tokenizer = self.tokenizer
        input_ids, labels = [], []
        for ids in documents:
            ids = np.asarray(ids, dtype=np.int64)
            start = len(ids) - (length - 2)
            if start < 0:
                raise ValueError(f"A document of {len(ids) + 2} tokens is shorter than the context length {length}")
            scored = self.scored_positions(ids)
            context = ids[start:].copy()
            context[scored - start] = tokenizer.mask_token_id
            row_labels = np.full(length, IGNORE_INDEX, dtype=np.int64)
            row_labels[scored - start + 1] = ids[scored]
            input_ids.append([tokenizer.cls_token_id, *context.tolist(), tokenizer.sep_token_id])
            labels.append(row_labels.tolist())
        return Dataset.from_dict({"input_ids": input_ids, "labels": labels})

    def measure(self, model, documents: list[list[int]], lengths: list[int], dropped: list[int],
                output_dir: str) -> dict:
        """The results section: `context_lengths` (kept), `dropped_lengths`, `documents`, `probe_tokens`,
        `positions` (scored per length, the same at every length) and `top_k` {length: {top_<k>: accuracy}}."""
        eval_args = self.eval_args
        top_k = MLMTopKMetrics(eval_args.top_k, medical_breakdown=False).top_k
        collator = DataCollatorForTokenClassification(self.tokenizer)  # pads labels with -100
        figures = {}
        for length in lengths:
            dataset = self.rows(documents, length)
            batch_size = max(1, eval_args.per_device_eval_batch_size * TOKENS_PER_BATCH // length)
            predictions = predict_masked(model, self.tokenizer, dataset, collator, eval_args, output_dir,
                                         batch_size=batch_size)
            figures[length] = predictions.figures(np.ones(predictions.labels.shape, dtype=bool), top_k)
            logger.info("Long context: length %d, %d positions, top-1 %s", length, figures[length]["num_positions"],
                        figures[length]["top_1"] if "top_1" in figures[length] else "n/a")
        positions = figures[lengths[0]]["num_positions"]
        if not positions:
            raise ValueError(f"Long-context probe: no position scored in the last probe_tokens={eval_args.probe_tokens}"
                             f" tokens of {len(documents)} documents; raise probe_tokens or max_probe_documents")
        return {
            "context_lengths": list(lengths),
            "dropped_lengths": list(dropped),
            "documents": len(documents),
            "probe_tokens": eval_args.probe_tokens,
            "positions": positions,
            "top_k": {str(length): {f"top_{k}": figures[length][f"top_{k}"] for k in top_k} for length in lengths},
        }


def format_long_context_table(section: dict) -> str:
    """Markdown table: per context length, the scored positions and top-k accuracy (%); dropped lengths after."""
    lengths = section["context_lengths"]
    ks = list(section["top_k"][str(lengths[0])])
    lines = ["| context length | positions | " + " | ".join(k.replace("top_", "Top-") for k in ks) + " |",
             "|" + "---|" * (2 + len(ks))]
    for length in lengths:
        cells = " | ".join(f"{100 * section['top_k'][str(length)][k]:.2f}" for k in ks)
        lines.append(f"| {length} | {section['positions']} | {cells} |")
    if section["dropped_lengths"]:
        lines.append(f"\nDropped context lengths (longer than every document): {section['dropped_lengths']}")
    return "\n".join(lines)
