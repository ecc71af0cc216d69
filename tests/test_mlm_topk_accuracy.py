"""The `mlm_topk_accuracy` evaluate module against a brute-force reference (ties included), and its bad inputs."""

import evaluate
import numpy as np
import pytest

from clinical_modernbert.metrics import MLM_TOPK_ACCURACY

VOCAB = 12


def brute_force_rank(scores, reference: int) -> int:
    """1-based rank of the reference when tokens are sorted by descending score, then ascending id."""
    order = sorted(range(len(scores)), key=lambda v: (-scores[v], v))
    return order.index(reference) + 1


def brute_force(scores, references, top_k, flags=None, mask_flags=None) -> dict:
    counted = [i for i, ref in enumerate(references) if ref != -100]
    ranks = {i: brute_force_rank(scores[i], references[i]) for i in counted}
    groups = {"": counted}
    if mask_flags is not None:
        groups["mask_only_"] = [i for i in counted if mask_flags[i] > 0]
    if flags is not None:
        for prefix, members in list(groups.items()):
            groups[f"{prefix}medical_"] = [i for i in members if flags[i] > 0]
            groups[f"{prefix}other_"] = [i for i in members if flags[i] == 0]
    results = {}
    for prefix, members in groups.items():
        for k in top_k:
            results[f"{prefix}top_{k}"] = sum(ranks[i] <= k for i in members) / len(members) if members else None
        results[f"{prefix}num_positions"] = len(members)
    return results


def tied_logits(n: int, seed: int = 0):
    """Integer-valued scores in 0..3 over a small vocabulary: almost every row has ties at every k."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(n, VOCAB)).astype(np.float32)
    references = rng.integers(0, VOCAB, size=n)
    references[rng.random(n) < 0.2] = -100  # positions that were not masked
    flags = rng.integers(0, 3, size=n)  # 0 other, 1 term start, 2 term continuation
    return scores, references, flags


def load(top_k):
    return evaluate.load(MLM_TOPK_ACCURACY, top_k=top_k)


def test_logits_with_ties_match_brute_force_for_every_k():
    scores, references, flags = tied_logits(300)
    top_k = list(range(1, VOCAB + 1))
    result = load(top_k).compute(predictions=scores, references=references, medical_flags=flags)
    assert result == brute_force(scores, references, top_k, flags)
    assert result[f"top_{VOCAB}"] == 1.0


def test_mask_only_figures_match_brute_force_with_and_without_medical_flags():
    scores, references, flags = tied_logits(400, seed=2)
    mask_flags = np.random.default_rng(3).random(400) < 0.8
    top_k = [1, 2, 5]
    result = load(top_k).compute(predictions=scores, references=references, medical_flags=flags,
                                 mask_flags=mask_flags)
    assert result == brute_force(scores, references, top_k, flags, mask_flags)
    assert 0 < result["mask_only_num_positions"] < result["num_positions"]
    assert result["mask_only_top_1"] != result["top_1"]
    plain = load(top_k).compute(predictions=scores, references=references, mask_flags=mask_flags)
    assert plain == brute_force(scores, references, top_k, mask_flags=mask_flags)
    assert "mask_only_medical_top_1" not in plain


def test_ranked_ids_in_batches_match_brute_force():
    scores, references, _ = tied_logits(200, seed=1)
    top_k = [1, 2, 3, 5, 8]
    ranked = np.array([sorted(range(VOCAB), key=lambda v: (-row[v], v))[: top_k[-1]] for row in scores])
    metric = load(top_k)
    for start in range(0, 200, 64):
        metric.add_batch(predictions=ranked[start : start + 64], references=references[start : start + 64])
    assert metric.compute() == brute_force(scores, references, top_k)


def test_single_positions_with_add():
    metric = load([1, 2])
    metric.add(prediction=[4, 9], reference=9, medical_flag=1)
    metric.add(prediction=[4, 9], reference=4, medical_flag=0)
    result = metric.compute()
    assert (result["top_1"], result["top_2"], result["num_positions"]) == (0.5, 1.0, 2)
    assert (result["medical_top_1"], result["other_top_1"]) == (0.0, 1.0)


def test_no_counted_position_gives_none_not_zero():
    scores, _, flags = tied_logits(10)
    result = load([1, 5]).compute(predictions=scores, references=np.full(10, -100), medical_flags=flags)
    assert result == {"top_1": None, "top_5": None, "num_positions": 0}


def test_k_larger_than_the_vocabulary_raises():
    scores, references, _ = tied_logits(5)
    with pytest.raises(ValueError, match=f"top_k=25 exceeds the vocabulary: the logits have {VOCAB}"):
        load([1, 25]).compute(predictions=scores, references=references)


def test_fewer_ids_than_k_raises():
    with pytest.raises(ValueError, match="hold 3 ids per position; top_k=5 needs at least 5"):
        load([1, 5]).compute(predictions=[[1, 2, 3]], references=[2])


@pytest.mark.parametrize("inputs", [{}, {"predictions": [], "references": []}])
def test_empty_input_raises(inputs):
    with pytest.raises(ValueError, match="Empty input"):
        load([1]).compute(**inputs)


def test_flags_for_some_batches_only_raise():
    metric = load([1])
    metric.add_batch(predictions=[[1]], references=[1], medical_flags=[1])
    metric.add_batch(predictions=[[1]], references=[1])
    with pytest.raises(ValueError, match="medical_flags were given for some batches only"):
        metric.compute()
    metric = load([1])
    metric.add_batch(predictions=[[1]], references=[1], mask_flags=[0])
    metric.add_batch(predictions=[[1]], references=[1])
    with pytest.raises(ValueError, match="mask_flags were given for some batches only"):
        metric.compute()


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([[1, 2], [3]], [1, 2], "same length for every position"),
        ([[1, 2], [3, 4]], [1], "one row per reference"),
        ([[0.1, 0.2], [0.3, 0.4]], [1, 2], "outside the vocabulary"),
        ([[1, 2]], [-5], "token ids >= 0, or -100"),
        ([[0.1, float("nan")]], [0], "NaN"),
        ([[1, 2]], [0.5], "integer token ids"),
    ],
)
def test_bad_input_raises_clear_error(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        load([1]).compute(predictions=predictions, references=references)


def test_invalid_top_k_raises():
    with pytest.raises(ValueError, match="positive integers"):
        load([0, 5])


def test_info_documents_inputs_and_outputs():
    metric = load([1, 5])
    for word in ("predictions", "references", "medical_flags", "mask_flags", "mask_only_", "top_{k}", "num_positions",
                 "-100", "Ties"):
        assert word in metric.inputs_description + metric.description
    assert "predictions" in metric.compute.__doc__
