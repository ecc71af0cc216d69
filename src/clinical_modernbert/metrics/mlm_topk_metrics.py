"""`MLMTopKMetrics`: the `Trainer` side of the `mlm_topk_accuracy` `evaluate` module (its `compute_metrics` and
`preprocess_logits_for_metrics`), adding perplexity over the same counted positions.

Memory: `preprocess_logits_for_metrics` turns each batch's logits into the top-k ids and the reference's negative
log-likelihood per masked position; with `batch_eval_metrics=True` each batch is then handed to the `evaluate`
module, which keeps one rank and one flag per position on disk. Peak memory is set by one batch, not by the data.
"""

from __future__ import annotations

import math

import evaluate
import numpy as np
import torch
import torch.nn.functional as F
from transformers import EvalPrediction

from ..artifacts import MASK_ONLY
from . import MLM_TOPK_ACCURACY

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


