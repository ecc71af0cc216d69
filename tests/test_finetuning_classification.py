import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest
from conftest import SMOKE_CONFIG, run_finetune_recipe, shared_path
from transformers import AutoTokenizer

from clinical_modernbert.assets import EMBEDDED_TOKENIZER_DIR
from clinical_modernbert.finetuning.classification import (
    ClassificationTask,
    encode_windows,
    merge_example_logits,
    read_jsonl,
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_read_jsonl_keeps_every_row_and_reads_integer_labels_as_strings(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a b", "label": 1}\n\n{"text": "c", "label": 0, "extra": []}\n', encoding="utf-8")
    data = read_jsonl(path)
    assert (data.texts, data.labels) == (["a b", "c"], ["1", "0"])


@pytest.mark.parametrize(
    "line,problem",
    [
        ('{"text": "a", "label": "X"', "not valid JSON"),
        ('{"text": "a"}', "expected an object with fields 'text' and 'label'"),
        ('["a", "X"]', "expected an object"),
        ('{"text": "  ", "label": "X"}', "'text' must be a non-empty string"),
        ('{"text": "a", "label": null}', "'label' must be a string or integer"),
        ('{"text": "a", "label": true}', "'label' must be a string or integer"),
        ('{"text": "a", "label": 0.5}', "'label' must be a string or integer"),
    ],
)
def test_bad_jsonl_row_names_file_line_and_problem(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": "X"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*" + problem.replace("[", r"\[")):
        read_jsonl(path)


def test_empty_jsonl_file_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no examples"):
        read_jsonl(tmp_path / "empty.jsonl")


def test_unknown_label_in_test_split_is_refused(tmp_path):
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "X"}, {"text": "b", "label": "Y"}]),
        "validation": write_jsonl(tmp_path / "dev.jsonl", [{"text": "a", "label": "X"}]),
        "test": write_jsonl(tmp_path / "test.jsonl", [{"text": "a", "label": "Z"}, {"text": "b", "label": "X"}]),
    }
    with pytest.raises(ValueError, match=r"test.jsonl: label\(s\) \['Z'\] do not occur in the training split"):
        ClassificationTask(files, {}, "text", "label")
    write_jsonl(files["train"], [{"text": "a", "label": "X"}])
    with pytest.raises(ValueError, match="at least 2 labels"):
        ClassificationTask(files, {}, "text", "label")


def test_long_texts_become_stride_windows_not_truncated(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR)
    long_text = " ".join(f"aspirin {i} reduced platelet aggregation" for i in range(12))
    data = read_jsonl(write_jsonl(tmp_path / "a.jsonl", [
        {"text": "short note", "label": "A"}, {"text": long_text, "label": "B"}, {"text": "another", "label": "A"},
    ]))
    encoded = encode_windows(data, tokenizer, {"A": 0, "B": 1}, max_length=16, stride=4)
    ids = encoded.dataset["input_ids"]
    windows_of_long = [i for i, example in enumerate(encoded.example_of_window) if example == 1]
    assert encoded.split_examples == 1 and len(windows_of_long) > 2
    assert all(len(row) <= 16 for row in ids)
    assert [encoded.dataset["labels"][i] for i in windows_of_long] == [1] * len(windows_of_long)
    content = [ids[i][1:-1] for i in windows_of_long]  # without [CLS] ... [SEP]
    assert all(prev[-4:] == nxt[:4] for prev, nxt in itertools.pairwise(content))  # neighbours share 4 tokens
    whole = tokenizer(long_text, add_special_tokens=False)["input_ids"]
    assert content[0] + [t for window in content[1:] for t in window[4:]] == whole  # nothing dropped


def test_stride_leaving_no_new_tokens_is_refused(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR)  # [CLS] ... [SEP]: 14 of 16 tokens left
    data = read_jsonl(write_jsonl(tmp_path / "a.jsonl", [{"text": "a b c", "label": "A"}]))
    with pytest.raises(ValueError, match=r"stride=14 must be in \[0, 14\).*raise max_length"):
        encode_windows(data, tokenizer, {"A": 0}, max_length=16, stride=14)


def test_window_logits_are_averaged_per_example():
    logits = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0], [4.0, -1.0]])
    merged = merge_example_logits(logits, np.array([0, 0, 1, 2]), 3)
    np.testing.assert_allclose(merged, [[0.5, 1.5], [2.0, 2.0], [4.0, -1.0]])


@pytest.mark.slow
def test_classification_recipe_end_to_end_on_chemprot_slice(tmp_path, tiny_checkpoint):
    data_dir = shared_path("data/eval/chemprot")
    results = run_finetune_recipe([
        "--config", str(SMOKE_CONFIG), "--model_name_or_path", str(tiny_checkpoint), "--task_type", "classification",
        "--task_name", "chemprot-smoke", "--data_dir", str(data_dir), "--seeds", "3", "--max_steps", "10",
        "--output_dir", str(tmp_path),
    ])
    written = json.loads((tmp_path / "finetune_results_chemprot-smoke.json").read_text())
    assert written == json.loads(json.dumps(results))
    train_labels = {json.loads(line)["label"] for line in (data_dir / "train.jsonl").open()}
    assert written["labels"] == sorted(train_labels) and len(train_labels) == 13
    assert (written["task"], written["split"], written["num_examples"]) == ("chemprot-smoke", "test", 100)
    assert written["data_file"] == str(data_dir / "test.jsonl") and written["seeds"] == [3]
    metrics = written["metrics"]
    assert set(metrics) == {"accuracy", "micro_f1", "macro_f1"}
    assert metrics["micro_f1"]["values"] == pytest.approx(metrics["accuracy"]["values"])  # single-label task
    assert all(0 <= m["mean"] <= 1 and m["std"] == 0.0 for m in metrics.values())


@pytest.mark.slow
def test_tiny_model_beats_the_majority_class_on_a_learnable_slice(tmp_path, tiny_checkpoint):
    """INHIBITOR vs SUBSTRATE relations: 'inhibit' appears in 84% vs 15% of them, so a few dozen steps can learn it."""
    source = shared_path("data/eval/chemprot")

    def balanced(split, per_label):
        rows = [json.loads(line) for line in (source / f"{split}.jsonl").open()]
        by_label = [[r for r in rows if r["label"] == label][:per_label] for label in ("INHIBITOR", "SUBSTRATE")]
        return [row for pair in zip(*by_label) for row in pair]

    for name, split, per_label in [("train", "train", 400), ("dev", "dev", 25), ("test", "test", 150)]:
        write_jsonl(tmp_path / f"{name}.jsonl", balanced(split, per_label))
    results = run_finetune_recipe([
        "--config", str(SMOKE_CONFIG), "--model_name_or_path", str(tiny_checkpoint), "--task_type", "classification",
        "--data_dir", str(tmp_path), "--seeds", "1", "--max_train_examples", "800", "--max_eval_examples", "300",
        "--max_length", "128", "--stride", "32", "--max_steps", "50", "--learning_rate", "3e-3",
        "--output_dir", str(tmp_path / "out"),
    ])
    test_labels = [json.loads(line)["label"] for line in (tmp_path / "test.jsonl").open()]
    n = len(test_labels)
    majority = Counter(test_labels).most_common(1)[0][1] / n
    # Three binomial standard errors above the majority share: a model no better than it passes with p < 0.002.
    margin = 3 * math.sqrt(majority * (1 - majority) / n)
    assert results["metrics"]["accuracy"]["values"][0] > majority + margin
