"""Masked-token evaluation: top-k accuracy and perplexity, inside `Trainer` and for `recipes/evaluate_mlm.py`.

Two sets of counted positions, both always reported:
- all labelled positions (the original card's and ModernBERT's protocol): every token the collator selected for
  masking, whether its input became `[MASK]` (80%), a random token (10%) or stayed unchanged (10%);
- `[MASK]` positions only (`mask_only_` figures): the answer is not in the input, so copying it earns nothing.
Special tokens and padding are never selected. Top-k accuracy and perplexity (exp of the mean cross-entropy) are
computed over exactly those positions. Masks are a function of (seed, document, position) only (see `masking`), so
the figures do not depend on the batch size, the number of processes or how documents were packed into rows.

Memory: `MLMTopKMetrics.preprocess_logits_for_metrics` turns each batch's logits into the top-k ids and the reference's
negative log-likelihood per masked position; with `batch_eval_metrics=True` each batch is then handed to the `evaluate`
module, which keeps one rank and one flag per position on disk. Peak memory is set by one batch, not by the data.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import evaluate
import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import EvalPrediction, TrainingArguments

from .artifacts import COUNTED_POSITIONS, MASK_ONLY, MASK_ONLY_POSITIONS, MLM_EVAL_FILE, MlmEvalReport
from .configs import DataArguments, EvaluationArguments
from .data.rows import INPUT_IDS
from .data.stream import PackedStream, materialise
from .lexicon import Lexicon
from .masking import MedicalMaskingCollator
from .metrics import MLM_TOPK_ACCURACY
from .trainer import MLMTrainer

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
PROTOCOLS = (  # (prefix of the figures, how tables name them)
    ("", "all labelled ([MASK], random, kept)"),
    (MASK_ONLY, "[MASK] only"),
)


def top_k_ids(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Ids of the `k` highest scores of each row, best first; equal scores rank by ascending id (a stable sort)."""
    values, ids = scores.topk(k, dim=-1)
    # topk orders ties arbitrarily: rows where a tie reaches into the top k are ranked again by a stable sort
    tied = (values[:, 1:] == values[:, :-1]).any(-1) | ((scores >= values[:, -1:]).sum(-1) > k)
    if tied.any():
        ids[tied] = scores[tied].sort(dim=-1, descending=True, stable=True).indices[:, :k]
    return ids


class MLMTopKMetrics:
    """`compute_metrics` and `preprocess_logits_for_metrics` of a `Trainer`: top-k accuracy and perplexity.

    Use with `batch_eval_metrics=True` (flat memory). Labels that come as `(labels, medical_mask[, mask_input])`
    (see `MLMTrainer`) add the medical/other breakdown, unless `medical_breakdown` is False, and the `mask_only_`
    figures.
    """

    def __init__(self, top_k: list[int] | None = None, medical_breakdown: bool = True):
        self.metric = evaluate.load(MLM_TOPK_ACCURACY, **({"top_k": top_k} if top_k else {}))
        self.top_k = self.metric.top_k
        self.medical_breakdown = medical_breakdown
        self._nll = np.zeros(2)  # sums over all counted positions and over [MASK] positions
        self._count = np.zeros(2, dtype=np.int64)

    def preprocess_logits_for_metrics(self, logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Per masked position, the top-k ids and the reference's negative log-likelihood; never the logits.

        Takes (batch, seq, vocab) logits, or the (masked positions, vocab) logits of ModernBERT's
        `sparse_prediction`. Returns `(top_ids, nll)` shaped like the labels (plus k): -100 and 0 where not masked.
        """
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        labels = labels[0] if isinstance(labels, (tuple, list)) else labels
        counted = labels != IGNORE_INDEX
        scores = logits[counted] if logits.dim() == labels.dim() + 1 else logits
        if scores.shape[0] != int(counted.sum()):
            raise ValueError(
                f"Logits of shape {tuple(logits.shape)} do not match labels of shape {tuple(labels.shape)} "
                f"with {int(counted.sum())} masked positions."
            )
        k = self.top_k[-1]
        if k > scores.shape[-1]:
            raise ValueError(f"top_k={k} exceeds the vocabulary size {scores.shape[-1]}.")
        scores = scores.float()
        top = labels.new_full((*labels.shape, k), IGNORE_INDEX)
        top[counted] = top_k_ids(scores, k)
        nll = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        nll[counted] = F.cross_entropy(scores, labels[counted], reduction="none")
        return top, nll

    def __call__(self, eval_pred: EvalPrediction, compute_result: bool = True) -> dict | None:
        """Add a batch (or the whole evaluation); at `compute_result`, return accuracies and perplexity."""
        top, nll = (_numpy(x) for x in eval_pred.predictions)
        label_ids = eval_pred.label_ids
        parts = list(label_ids) if isinstance(label_ids, (tuple, list)) else [label_ids]
        labels, medical, mask_input = (None if x is None else _numpy(x).reshape(-1) for x in (parts + [None] * 2)[:3])
        self.metric.add_batch(
            predictions=top.reshape(len(labels), -1),
            references=labels,
            medical_flags=medical if self.medical_breakdown else None,
            mask_flags=mask_input,
        )
        counted = labels != IGNORE_INDEX
        nll = nll.reshape(-1)
        selections = [counted] if mask_input is None else [counted, counted & (mask_input > 0)]
        for i, selected in enumerate(selections):
            self._nll[i] += float(nll[selected].sum(dtype=np.float64))
            self._count[i] += int(selected.sum())
        if not compute_result:
            return None
        results = self.metric.compute()
        for (prefix, _), nll_sum, count in zip(PROTOCOLS, self._nll, self._count):
            if count:
                results[f"{prefix}perplexity"] = math.exp(nll_sum / count)
        self._nll[:], self._count[:] = 0.0, 0
        return {key: value for key, value in results.items() if value is not None}


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def build_eval_lexicon(eval_args: EvaluationArguments) -> Lexicon | None:
    """The lexicon of the medical/other breakdown, or None (no breakdown) when no term list is asked for."""
    if not (eval_args.use_default_lexicon or eval_args.lexicon_files or eval_args.code_tables):
        logger.info("Data: no medical lexicon, so no medical/other breakdown")
        return None
    return Lexicon.from_args(eval_args)


def build_eval_dataset(data_args: DataArguments, eval_args: EvaluationArguments, tokenizer, lexicon) -> Dataset:
    """Packed rows of the evaluation text: the held-out documents of the sources, or all of them."""
    split = "eval" if eval_args.split == "held_out" else "all"
    dataset = materialise(PackedStream(data_args, tokenizer, lexicon, split=split, seed=eval_args.seed))
    if dataset is None:
        raise ValueError(
            f"No evaluation text: no document of {[s.name for s in data_args.sources]} is held out "
            f"(eval_fraction={data_args.eval_fraction}); use split: all to evaluate on every document."
        )
    tokens = sum(len(ids) for ids in dataset[INPUT_IDS])
    logger.info("Data: %s split, %d rows of up to %d tokens, %d tokens", eval_args.split, len(dataset),
                data_args.max_seq_length, tokens)
    return dataset


def build_eval_collator(tokenizer, mlm_probability: float, seed: int) -> MedicalMaskingCollator:
    """Uniform token-level masking at a fixed rate and seed, so that every token is equally likely to count.

    Used by `recipes/evaluate_mlm.py` and by the pretraining run's own evaluation, so their numbers are comparable.
    """
    return MedicalMaskingCollator(
        tokenizer=tokenizer,
        mlm_probability=mlm_probability,
        seed=seed,
        medical_weight=1.0,
        whole_term_masking=False,
    )


def evaluate_masked_lm(model, tokenizer, dataset: Dataset, collator, eval_args: EvaluationArguments,
                       medical_breakdown: bool, output_dir: str) -> tuple[dict, list[int]]:
    """Top-k accuracies, counts and perplexity of `model` on `dataset` masked by `collator`, and the k values."""
    metrics = MLMTopKMetrics(eval_args.top_k, medical_breakdown=medical_breakdown)
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=eval_args.per_device_eval_batch_size,
        batch_eval_metrics=True,
        remove_unused_columns=False,
        bf16=eval_args.bf16,
        seed=eval_args.seed,
        report_to="none",
        dataloader_num_workers=0,
    )
    trainer = MLMTrainer(
        model=model,
        args=args,
        eval_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=metrics,
        preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics,
    )
    logger.info("Eval: %d rows, %.0f%% of tokens masked (seed %d), top-k for k in %s", len(dataset),
                100 * eval_args.mlm_probability, eval_args.seed, metrics.top_k)
    results = trainer.evaluate()
    # eval_loss is the Trainer's mean of per-batch losses (perplexity is weighted by position); the rest is bookkeeping
    dropped = ("eval_loss", "eval_model_preparation_time", "epoch")
    return {key.removeprefix("eval_"): value for key, value in results.items() if key not in dropped}, metrics.top_k


def format_table(results: dict, top_k: list[int]) -> str:
    """The original model card's table (Top-1 / Top-5 / ... in %), one row per counted-position set and token group.

    Two sets: all labelled positions (the original card's protocol) and `[MASK]` positions only; then perplexity.
    """
    header = "| counted positions | tokens | positions | " + " | ".join(f"Top-{k}" for k in top_k) + " |"
    lines = [header, "|" + "---|" * (3 + len(top_k))]
    for protocol, label in PROTOCOLS:
        for group, group_prefix in (("all", ""), ("medical", "medical_"), ("other", "other_")):
            prefix = protocol + group_prefix
            if f"{prefix}num_positions" not in results:
                continue
            cells = [f"{100 * results[f'{prefix}top_{k}']:.2f}" if f"{prefix}top_{k}" in results else "n/a"
                     for k in top_k]
            lines.append(f"| {label} | {group} | {results[f'{prefix}num_positions']} | " + " | ".join(cells) + " |")
    perplexities = [f"{results[f'{p}perplexity']:.2f} ({label})" for p, label in PROTOCOLS
                    if f"{p}perplexity" in results]
    if perplexities:
        lines.append("\nPerplexity: " + ", ".join(perplexities))
    return "\n".join(lines)


def results_path(model_name_or_path: str, output_json: str | None) -> Path:
    """Where the result file goes: `output_json`, else inside a local model directory, else here."""
    if output_json:
        return Path(output_json)
    model_dir = Path(model_name_or_path)
    return (model_dir if model_dir.is_dir() else Path.cwd()) / MLM_EVAL_FILE


def evaluation_report(model_name_or_path: str, data_args: DataArguments, eval_args: EvaluationArguments,
                      dataset: Dataset, collator, top_k: list[int], results: dict) -> MlmEvalReport:
    """The result file the model card reads: what was measured, on what, how masked, and the numbers."""
    return MlmEvalReport(
        model=model_name_or_path,
        data={
            "split": eval_args.split,
            "sources": {
                s.name: {"path": s.path, "data_files": s.data_files, "split": s.split} for s in data_args.sources
            },
            "eval_fraction": data_args.eval_fraction if eval_args.split == "held_out" else None,
            "max_seq_length": data_args.max_seq_length,
            "rows": len(dataset),
            "tokens": sum(len(ids) for ids in dataset[INPUT_IDS]),
        },
        masking={
            "mlm_probability": eval_args.mlm_probability,
            "seed": eval_args.seed,
            "mask_replace_prob": collator.mask_replace_prob,
            "random_replace_prob": collator.random_replace_prob,
            "counted_positions": COUNTED_POSITIONS,
            "mask_only_positions": MASK_ONLY_POSITIONS,
        },
        top_k=top_k,
        metrics=results,
    )
