"""The pieces of `recipes/evaluate_mlm.py`: top-k accuracy and perplexity of a saved model on packed rows.

Two sets of counted positions, both always reported:
- all labelled positions (the original card's and ModernBERT's protocol): every token the collator selected for
  masking, whether its input became `[MASK]` (80%), a random token (10%) or stayed unchanged (10%);
- `[MASK]` positions only (`mask_only_` figures): the answer is not in the input, so copying it earns nothing.
Special tokens and padding are never selected. Top-k accuracy and perplexity (exp of the mean cross-entropy) are
computed over exactly those positions. Masks are a function of (seed, document, position) only (see `masking`), so
the figures do not depend on the batch size, the number of processes or how documents were packed into rows.

The figures come from `metrics.mlm_topk_metrics.MLMTopKMetrics` (the `Trainer` side of the `evaluate` module), the
masks from `MedicalMaskingCollator.for_evaluation`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import evaluate
import numpy as np
from datasets import Dataset
from transformers import TrainingArguments

from .artifacts import COUNTED_POSITIONS, MASK_ONLY_POSITIONS, MLM_EVAL_FILE, MlmEvalReport
from .configs import DataArguments, EvaluationArguments
from .data.rows import INPUT_IDS
from .data.stream import EvaluationRows, materialise
from .lexicon import Lexicon
from .metrics import MLM_TOPK_ACCURACY
from .metrics.mlm_topk_metrics import IGNORE_INDEX, PROTOCOLS, MLMTopKMetrics
from .trainer import MLMTrainer

logger = logging.getLogger(__name__)


def build_eval_lexicon(eval_args: EvaluationArguments) -> Lexicon | None:
    """The lexicon of the medical/other breakdown, or None (no breakdown) when no term list is asked for."""
    if not (eval_args.use_default_lexicon or eval_args.lexicon_files or eval_args.code_tables):
        logger.info("Data: no medical lexicon, so no medical/other breakdown")
        return None
    return Lexicon.from_args(eval_args)


def build_eval_dataset(data_args: DataArguments, eval_args: EvaluationArguments, tokenizer, lexicon) -> Dataset:
    """Packed rows of the evaluation text: the held-out documents of the sources, or all of them."""
    held_out = eval_args.split == "held_out"
    dataset = materialise(EvaluationRows(data_args, tokenizer, lexicon, held_out=held_out, seed=eval_args.seed))
    if dataset is None:
        raise ValueError(
            f"No evaluation text: no document of {[s.name for s in data_args.sources]} is held out "
            f"(eval_fraction={data_args.eval_fraction}); use split: all to evaluate on every document."
        )
    tokens = sum(len(ids) for ids in dataset[INPUT_IDS])
    logger.info("Data: %s split, %d rows of up to %d tokens, %d tokens", eval_args.split, len(dataset),
                data_args.max_seq_length, tokens)
    return dataset


def evaluate_masked_lm(model, tokenizer, dataset: Dataset, collator, eval_args: EvaluationArguments,
                       medical_breakdown: bool, output_dir: str) -> tuple[dict, list[int]]:
    """Top-k accuracies, counts and perplexity of `model` on `dataset` masked by `collator`, and the k values."""
    metrics = MLMTopKMetrics(eval_args.top_k, medical_breakdown=medical_breakdown)
    trainer = _evaluation_trainer(model, tokenizer, dataset, collator, eval_args, output_dir, metrics,
                                  batch_eval_metrics=True, compute_metrics=metrics)
    logger.info("Eval: %d rows, %.0f%% of tokens masked (seed %d), top-k for k in %s", len(dataset),
                100 * eval_args.mlm_probability, eval_args.seed, metrics.top_k)
    results = trainer.evaluate()
    # eval_loss is the Trainer's mean of per-batch losses (perplexity is weighted by position); the rest is bookkeeping
    dropped = ("eval_loss", "eval_model_preparation_time", "eval_runtime", "eval_samples_per_second",
               "eval_steps_per_second", "epoch")
    return {key.removeprefix("eval_"): value for key, value in results.items() if key not in dropped}, metrics.top_k


@dataclass
class MaskedPredictions:
    """Per row of a dataset (in its order) and position (padded with -100 to the longest row): the model's top-k ids,
    the labels, and, from `MedicalMaskingCollator` batches, where the labelled input was `[MASK]`."""

    top_ids: np.ndarray  # (rows, positions, max k), best first; -100 where not labelled
    labels: np.ndarray  # (rows, positions): the reference id where labelled, -100 elsewhere
    mask_input: np.ndarray | None  # (rows, positions): 1 where the labelled input was [MASK]; None if not given

    def figures(self, selected: np.ndarray, top_k: list[int]) -> dict:
        """The `mlm_topk_accuracy` figures (`top_<k>`, `num_positions`, `mask_only_` ones) over the labelled
        positions where `selected` (rows, positions) is True; accuracies over no position are None."""
        counted = selected & (self.labels != IGNORE_INDEX)
        if not counted.any():
            return {**{f"top_{k}": None for k in top_k}, "num_positions": 0}
        metric = evaluate.load(MLM_TOPK_ACCURACY, top_k=top_k)
        results = metric.compute(
            predictions=self.top_ids[counted], references=self.labels[counted],
            mask_flags=None if self.mask_input is None else self.mask_input[counted],
        )
        return {key: value for key, value in results.items() if value is not None or key.startswith("top_")}


def predict_masked(model, tokenizer, dataset: Dataset, collator, eval_args: EvaluationArguments, output_dir: str,
                   batch_size: int | None = None) -> MaskedPredictions:
    """`model`'s top-k ids at every labelled position of `dataset` batched by `collator` (`Trainer.predict`: any
    number of processes, bf16 as `eval_args` says); `batch_size` overrides `per_device_eval_batch_size`."""
    metrics = MLMTopKMetrics(eval_args.top_k, medical_breakdown=False)
    trainer = _evaluation_trainer(model, tokenizer, dataset, collator, eval_args, output_dir, metrics,
                                  batch_size=batch_size, eval_accumulation_steps=1)
    output = trainer.predict(dataset)
    top_ids, _ = output.predictions
    parts = output.label_ids if isinstance(output.label_ids, (tuple, list)) else (output.label_ids,)
    return MaskedPredictions(top_ids=top_ids, labels=parts[0], mask_input=parts[2] if len(parts) > 2 else None)


def _evaluation_trainer(model, tokenizer, dataset, collator, eval_args: EvaluationArguments, output_dir: str,
                        metrics: MLMTopKMetrics, batch_size: int | None = None, compute_metrics=None,
                        **training_args) -> MLMTrainer:
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=batch_size or eval_args.per_device_eval_batch_size,
        remove_unused_columns=False,
        bf16=eval_args.bf16,
        seed=eval_args.seed,
        report_to="none",
        dataloader_num_workers=0,
        **training_args,
    )
    return MLMTrainer(
        model=model,
        args=args,
        eval_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics,
    )


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
