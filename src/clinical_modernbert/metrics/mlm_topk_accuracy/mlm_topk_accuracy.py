"""Top-k masked-token accuracy, an `evaluate` metric: `evaluate.load("<path to this folder>", top_k=[1, 5, 10, 25])`."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from clinical_modernbert.artifacts.mlm_eval import GROUPS, MASK_ONLY  # the figures' names, as results files hold them

IGNORE_INDEX = -100
DEFAULT_TOP_K = (1, 5, 10, 25)

_DESCRIPTION = """
Top-k accuracy of masked-language-model predictions: the share of counted positions whose reference token is among
the k best-scored tokens, for each k of `top_k` (default 1, 5, 10, 25), overall and, when per-position medical flags
are given, for medical and other tokens separately, and, when per-position mask flags are given, all of it again over
the positions whose input was the mask token only (`mask_only_` figures: the answer is not in the input).

Counted positions: every position whose reference is not -100. With the labels of a masked-language-model collator
that is every position selected for masking, whether its input was replaced by the mask token, by a random token, or
kept unchanged (80/10/10); unselected positions carry -100 and are skipped.

Ties: tokens are ranked by descending score, equal scores by ascending token id (the order of a stable sort). A
reference tied with the k-th score is a hit if and only if it comes first in that order. Top-k id lists given as
predictions are taken as already ranked.

Memory: `add_batch` reduces each counted position to the rank of its reference (clipped to max(top_k) + 1), its
medical flag and its mask flag, and writes only those (6 bytes per position) to evaluate's Arrow cache file on disk, so
RAM does not grow with the number of batches; `compute` reads the columns back as numpy arrays (6 bytes per position).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one row per position, either
        - the top predicted token ids, best first, at least max(top_k) of them (integers), or
        - the scores (logits) of every vocabulary token (floats; their width is the vocabulary size).
    references: the reference token id of each position; -100 marks a position that is not counted.
    medical_flags (optional): per position, > 0 for a token of a medical term, 0 for any other token. Give it for
        every batch or for none.
    mask_flags (optional): per position, > 0 where the input was the mask token, 0 where it was a random or the
        unchanged token. Give it for every batch or for none.
Init args (`evaluate.load(path, top_k=[...])`):
    top_k: the k values, positive integers (default [1, 5, 10, 25]).
Returns:
    top_{k}: share of counted positions whose reference is within the top k, for each k.
    num_positions: the number of counted positions.
    medical_top_{k}, medical_num_positions, other_top_{k}, other_num_positions: the same for medical and other tokens,
        only when medical_flags were given.
    mask_only_top_{k}, mask_only_num_positions (and mask_only_medical_..., mask_only_other_...): the same over the
        positions whose input was the mask token, only when mask_flags were given.
    An accuracy over zero positions is None (not 0): a batch with no counted position is valid input, its result is
    `{"top_1": None, ..., "num_positions": 0}`. Empty input (no position at all) raises a ValueError.
Examples:
    >>> metric = evaluate.load("src/clinical_modernbert/metrics/mlm_topk_accuracy", top_k=[1, 2])
    >>> metric.compute(predictions=[[3, 7], [5, 2]], references=[7, 9])
    {'top_1': 0.0, 'top_2': 0.5, 'num_positions': 2}
"""


class MlmTopkAccuracy(evaluate.Metric):
    """Top-k masked-token accuracy that stores one rank and one flag per counted position."""

    def __init__(self, top_k=DEFAULT_TOP_K, **kwargs):
        ks = sorted({int(k) for k in top_k})
        if not ks or ks[0] < 1:
            raise ValueError(f"top_k must hold positive integers, got {list(top_k)}")
        self.top_k = ks
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            # what the cache stores per counted position (see the description), not the raw inputs
            features=datasets.Features(
                {"reference_rank": datasets.Value("int32"), "medical_flag": datasets.Value("int8"),
                 "mask_flag": datasets.Value("int8")}
            ),
            format="numpy",
        )

    def add_batch(self, *, predictions=None, references=None, medical_flags=None, mask_flags=None):
        """Add a batch of positions (see Args below)."""
        ranks, counted = self._reduce(predictions, references)
        super().add_batch(
            reference_rank=ranks.tolist(),
            medical_flag=_flags("medical_flags", medical_flags, counted).tolist(),
            mask_flag=_flags("mask_flags", mask_flags, counted).tolist(),
        )

    def add(self, *, prediction=None, reference=None, medical_flag=None, mask_flag=None):
        """Add one position (see Args below)."""
        self.add_batch(
            predictions=[prediction],
            references=[reference],
            medical_flags=None if medical_flag is None else [medical_flag],
            mask_flags=None if mask_flag is None else [mask_flag],
        )

    def compute(self, *, predictions=None, references=None, medical_flags=None, mask_flags=None, **kwargs):
        """Accuracies over every position added so far, plus these if given (see Args below)."""
        if predictions is not None or references is not None:
            self.add_batch(predictions=predictions, references=references, medical_flags=medical_flags,
                           mask_flags=mask_flags)
        if self.writer is None:
            raise ValueError("Empty input: no positions were added (pass predictions and references).")
        return super().compute(**kwargs)

    def _reduce(self, predictions, references):
        """Rank of each counted reference (1 = best, max(top_k) + 1 = missed), and which references are counted."""
        if predictions is None or references is None:
            raise ValueError("Both predictions and references are required.")
        refs = np.asarray(references)
        if refs.ndim != 1 or refs.size == 0:
            raise ValueError(f"Empty input or wrong shape: references must be a non-empty 1-D list, got {refs.shape}.")
        if not np.issubdtype(refs.dtype, np.integer):
            raise ValueError(f"references must be integer token ids, got dtype {refs.dtype}.")
        try:
            preds = np.asarray(predictions)
        except ValueError:
            raise ValueError("predictions must have the same length for every position.") from None
        if preds.ndim != 2 or preds.shape[0] != refs.shape[0]:
            raise ValueError(
                f"predictions must be one row per reference: got shape {preds.shape} for {refs.shape[0]} references."
            )
        counted = refs != IGNORE_INDEX
        refs_counted = refs[counted]
        if (refs_counted < 0).any():
            raise ValueError(f"references must be token ids >= 0, or {IGNORE_INDEX} for a position not counted.")
        k_max = self.top_k[-1]
        width = preds.shape[1]
        if np.issubdtype(preds.dtype, np.floating):
            if k_max > width:
                raise ValueError(f"top_k={k_max} exceeds the vocabulary: the logits have {width} entries.")
            if (refs_counted >= width).any():
                raise ValueError(f"A reference id is outside the vocabulary of {width} tokens.")
            ranks = _rank_in_scores(preds[counted], refs_counted)
        elif np.issubdtype(preds.dtype, np.integer):
            if width < k_max:
                raise ValueError(f"predictions hold {width} ids per position; top_k={k_max} needs at least {k_max}.")
            hits = preds[counted, :k_max] == refs_counted[:, None]
            ranks = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, k_max + 1)
        else:
            raise ValueError(f"predictions must be token ids (integers) or logits (floats), got dtype {preds.dtype}.")
        return np.minimum(ranks, k_max + 1).astype(np.int32), counted

    def _compute(self, reference_rank, medical_flag, mask_flag):
        by_group = _given("medical_flags", medical_flag)
        results = self._breakdown(reference_rank, medical_flag, by_group)
        if _given("mask_flags", mask_flag):
            only = mask_flag == 1
            results.update({f"{MASK_ONLY}{key}": value for key, value in
                            self._breakdown(reference_rank[only], medical_flag[only], by_group).items()})
        return results

    def _breakdown(self, ranks, medical_flag, by_group: bool) -> dict:
        """Accuracies over `ranks`, and over its medical and other positions if `by_group`."""
        results = self._accuracies(ranks)
        if by_group:
            for group, selected in zip(GROUPS, (medical_flag == 1, medical_flag == 0)):
                results.update({f"{group}_{k}": v for k, v in self._accuracies(ranks[selected]).items()})
        return results

    def _accuracies(self, ranks) -> dict:
        n = len(ranks)
        results = {f"top_{k}": float((ranks <= k).sum() / n) if n else None for k in self.top_k}
        results["num_positions"] = n
        return results


def _flags(name: str, flags, counted: np.ndarray) -> np.ndarray:
    """The 0/1 flag of each counted position, or -1 (unknown) for each when `flags` is None."""
    if flags is None:
        return np.full(int(counted.sum()), -1, dtype=np.int8)
    flags = np.asarray(flags)
    if flags.shape != counted.shape:
        raise ValueError(f"{name} must have one value per reference: {flags.shape} vs {counted.shape}.")
    return (flags[counted] > 0).astype(np.int8)


def _given(name: str, flags: np.ndarray) -> bool:
    """Whether `flags` were given (for every batch: for some only is an error)."""
    known = flags >= 0
    if known.any() and not known.all():
        raise ValueError(f"{name} were given for some batches only; give them for every batch or none.")
    return bool(known.any())


def _rank_in_scores(scores: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """1-based rank of each reference among its row's scores: descending score, equal scores by ascending id."""
    if np.isnan(scores).any():
        raise ValueError("The logits contain NaN.")
    ref_scores = scores[np.arange(len(refs)), refs][:, None]
    earlier_id = np.arange(scores.shape[1])[None, :] < refs[:, None]
    return 1 + (scores > ref_scores).sum(axis=1) + ((scores == ref_scores) & earlier_id).sum(axis=1)
