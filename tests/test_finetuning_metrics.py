import statistics

import pytest

from clinical_modernbert.finetuning.metrics import aggregate, classification_scores, entity_scores, iob_entities


def test_iob_entities_reads_spans_strictly():
    tags = ["B-Chem", "I-Chem", "O", "I-Dis", "B-Dis", "I-Chem", "B-Dis", "B-Dis", "I-Dis"]
    # I-Dis after O and I-Chem after a Disease continue nothing: in strict IOB2 they form no entity.
    assert iob_entities(tags) == {("Chem", 0, 2), ("Dis", 4, 5), ("Dis", 6, 7), ("Dis", 7, 9)}
    assert iob_entities([]) == set()
    assert iob_entities(["O", "O"]) == set()


def test_entity_scores_hand_built_case():
    gold = [
        ["B-Chem", "I-Chem", "O", "B-Dis", "O"],  # Chem 0-2, Dis 3-4
        ["B-Dis", "I-Dis", "I-Dis", "O"],  # Dis 0-3
        ["O", "B-Chem", "O"],  # Chem 1-2
    ]
    pred = [
        ["B-Chem", "I-Chem", "O", "B-Chem", "O"],  # Chem 0-2 TP; Chem 3-4 wrong type: FP (Chem) + FN (Dis)
        ["B-Dis", "I-Dis", "O", "O"],  # partial span Dis 0-2: FP (Dis) + FN (Dis 0-3), no credit
        ["O", "I-Chem", "B-Dis"],  # orphan I-Chem is no entity: FN (Chem); Dis 2-3 FP
    ]
    # Chemical: TP 1, FP 1, FN 1.  Disease: TP 0, FP 2, FN 2.  All: TP 1, FP 3, FN 3.
    scores = entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(1 / 4)
    assert scores["recall"] == pytest.approx(1 / 4)
    assert scores["f1"] == pytest.approx(1 / 4)
    assert scores["f1_Chem"] == pytest.approx(0.5)
    assert scores["f1_Dis"] == 0.0


def test_entity_scores_unequal_precision_and_recall():
    gold = [["B-X", "O", "B-X", "O", "B-X"]]
    pred = [["B-X", "O", "B-X", "O", "O"]]  # TP 2, FP 0, FN 1
    scores = entity_scores(gold, pred)
    assert (scores["precision"], scores["recall"]) == (1.0, pytest.approx(2 / 3))
    assert scores["f1"] == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3))


def test_entity_scores_reject_misaligned_input():
    with pytest.raises(ValueError, match="2 gold sentences but 1"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="Sentence 0: 2 gold tags but 1"):
        entity_scores([["O", "O"]], [["O"]])


def test_classification_scores_hand_built_case():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    # a: TP 2 FP 0 FN 1 -> F1 0.8;  b: TP 1 FP 1 FN 1 -> 0.5;  c: TP 1 FP 1 FN 0 -> 2/3
    scores = classification_scores(gold, pred)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["micro_f1"] == pytest.approx(4 / 6)  # single-label: micro F1 equals accuracy
    assert scores["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_classification_macro_f1_counts_a_label_only_predicted():
    scores = classification_scores(["a", "a"], ["a", "z"])
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)
    with pytest.raises(ValueError, match="No examples"):
        classification_scores([], [])


def test_aggregate_mean_and_sample_std():
    per_seed = [{"f1": 0.5, "f1_X": 0.2}, {"f1": 0.7}, {"f1": 0.6, "f1_X": 0.4}]
    result = aggregate(per_seed)
    assert result["f1"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1), "values": [0.5, 0.7, 0.6]}
    assert result["f1_X"]["values"] == [0.2, 0.0, 0.4]
    assert result["f1_X"]["std"] == pytest.approx(statistics.stdev([0.2, 0.0, 0.4]))
    assert aggregate([{"f1": 0.3}])["f1"]["std"] == 0.0
