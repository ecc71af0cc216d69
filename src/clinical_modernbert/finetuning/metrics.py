"""Scores of the fine-tuning tasks: strict entity-level P/R/F1, classification F1, mean ± std over seeds."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence


def iob_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entities `(type, start, end)` (end exclusive) of one IOB2 tag sequence, read strictly.

    An entity is `B-X` followed by any `I-X`; an `I-` tag that continues no entity of its type forms no entity,
    as in seqeval's strict IOB2 mode, so a prediction must get the span's start right to score.
    """
    entities, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        if kind is not None and tag != f"I-{kind}":
            entities.add((kind, start, i))
            kind = None
        if tag.startswith("B-"):
            start, kind = i, tag[2:]
    return entities


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over exact entity matches (span and type), plus F1 per entity type."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    tp, fp, fn = Counter(), Counter(), Counter()  # per entity type
    for i, (gold_tags, pred_tags) in enumerate(zip(gold, pred, strict=True)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(f"Sentence {i}: {len(gold_tags)} gold tags but {len(pred_tags)} predicted ones")
        gold_entities, pred_entities = iob_entities(gold_tags), iob_entities(pred_tags)
        tp.update(kind for kind, *_ in gold_entities & pred_entities)
        fp.update(kind for kind, *_ in pred_entities - gold_entities)
        fn.update(kind for kind, *_ in gold_entities - pred_entities)
    scores = dict(zip(("precision", "recall", "f1"), _prf(tp.total(), fp.total(), fn.total())))
    for kind in sorted(tp | fp | fn):
        scores[f"f1_{kind}"] = _prf(tp[kind], fp[kind], fn[kind])[2]
    return scores


def classification_scores(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    """Accuracy, micro F1 and macro F1 (unweighted mean over the labels found in gold or predictions)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predicted ones")
    if not gold:
        raise ValueError("No examples to score")
    tp = Counter(g for g, p in zip(gold, pred, strict=True) if g == p)
    fp = Counter(p for g, p in zip(gold, pred, strict=True) if g != p)
    fn = Counter(g for g, p in zip(gold, pred, strict=True) if g != p)
    labels = sorted(set(gold) | set(pred))
    return {
        "accuracy": sum(tp.values()) / len(gold),
        "micro_f1": _prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))[2],
        "macro_f1": statistics.fmean(_prf(tp[label], fp[label], fn[label])[2] for label in labels),
    }


def aggregate(per_seed: Sequence[dict[str, float]]) -> dict[str, dict]:
    """`{metric: {mean, std, values}}` over seeds; std is the sample standard deviation (0 for one seed)."""
    names = sorted({name for metrics in per_seed for name in metrics})
    result = {}
    for name in names:
        values = [metrics.get(name, 0.0) for metrics in per_seed]  # a type absent from one seed's output scored 0
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        result[name] = {"mean": statistics.fmean(values), "std": std, "values": values}
    return result


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
