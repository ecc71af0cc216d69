import itertools
import json
import logging
import re

import numpy as np
import pytest
from conftest import SMOKE_CONFIG, run_finetune_recipe, shared_path, tiny_config
from transformers import AutoTokenizer

from clinical_modernbert.assets import EMBEDDED_TOKENIZER_DIR
from clinical_modernbert.finetuning import FinetuneArguments
from clinical_modernbert.finetuning.ner import (
    IGNORE_INDEX,
    NerTask,
    encode_windows,
    label_list,
    merge_word_predictions,
    read_iob,
    window_spans,
    word_tokenizer,
)
from clinical_modernbert.finetuning.run import max_input_length


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR))


def test_split_files_are_found_in_data_dir(tmp_path):
    for name in ("train.tsv", "devel.tsv"):
        write(tmp_path / name, "a\tO\n")
    args = FinetuneArguments(model_name_or_path="m", task_type="ner", data_dir=str(tmp_path))
    assert (args.task_name, args.split_file("validation")) == (tmp_path.name, tmp_path / "devel.tsv")
    with pytest.raises(FileNotFoundError, match="No test file in .*: looked for test.tsv, test.iob, test.txt"):
        args.split_file("test")


@pytest.mark.parametrize(
    "overrides,problem",
    [
        ({"model_name_or_path": None}, "model_name_or_path is required"),
        ({"task_type": "qa"}, "task_type must be one of"),
        ({"data_dir": None}, "Give data_dir"),
        ({"eval_split": "train"}, "eval_split must be"),
        ({"seeds": [1, 1]}, "seeds must be distinct"),
        ({"stride": 512}, "stride must be in"),
        ({"max_train_examples": 0}, "max_train_examples must be >= 1"),
    ],
)
def test_bad_arguments_are_refused(overrides, problem):
    values = {"model_name_or_path": "m", "task_type": "ner", "data_dir": "d"} | overrides
    with pytest.raises(ValueError, match=problem):
        FinetuneArguments(**values)


def test_max_length_beyond_the_model_is_refused(tokenizer):
    args = FinetuneArguments(model_name_or_path="m", task_type="ner", data_dir="d", max_length=2048)
    with pytest.raises(ValueError, match="max_length=2048 exceeds the 1024 tokens"):
        max_input_length(args, tiny_config(tokenizer, max_position_embeddings=1024), tokenizer)


def test_read_iob_sentences_crlf_and_missing_final_blank_line(tmp_path):
    path = write(tmp_path / "a.tsv", "Aspirin\tB-Chemical\r\ncauses\tO\r\n\r\n\r\nrenal\tB-Disease\nfailure\tI-Disease")
    iob = read_iob(path)
    assert iob.words == [["Aspirin", "causes"], ["renal", "failure"]]
    assert iob.tags == [["B-Chemical", "O"], ["B-Disease", "I-Disease"]]
    assert iob.repaired_lines == []


def test_orphan_i_tags_are_read_as_b_counted_and_reported(tmp_path, caplog):
    text = "x\tI-Chem\ny\tO\n\na\tO\nb\tI-Dis\nc\tI-Dis\nd\tB-Chem\ne\tI-Dis\n"
    with caplog.at_level(logging.WARNING):
        iob = read_iob(write(tmp_path / "a.tsv", text))
    assert iob.tags == [["B-Chem", "O"], ["O", "B-Dis", "I-Dis", "B-Chem", "B-Dis"]]
    assert iob.repaired_lines == [1, 5, 8]
    assert "3 I- tag(s)" in caplog.text and "read as B-" in caplog.text and "[1, 5, 8]" in caplog.text


@pytest.mark.parametrize(
    "line", ["word", "word\tO\textra", "\tO", "word\tX-Chem", "word\tB-", "word\to", "word B-Chem"]
)
def test_malformed_iob_line_names_file_and_line(tmp_path, line):
    path = write(tmp_path / "bad.tsv", f"ok\tO\n\nfine\tO\n{line}\n")
    with pytest.raises(ValueError, match=re.escape(f"bad.tsv:4: malformed IOB line {line!r}")):
        read_iob(path)


def test_invalid_utf8_in_an_iob_file_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"ok\tO\n\nfine\tO\ncaf\xe9\tB-Chemical\n")
    with pytest.raises(ValueError, match=re.escape("bad.tsv:4: not valid UTF-8 (invalid continuation byte at byte 3 of "
                                                   "the line); save the file as UTF-8")):
        read_iob(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_iob_file_is_refused(tmp_path, text):
    with pytest.raises(ValueError, match="holds no sentences"):
        read_iob(write(tmp_path / "empty.tsv", text))


def test_unknown_label_in_test_split_is_refused(tmp_path):
    files = {
        "train": write(tmp_path / "train.tsv", "a\tB-Chem\nb\tO\n"),
        "validation": write(tmp_path / "dev.tsv", "a\tB-Chem\n"),
        "test": write(tmp_path / "test.tsv", "a\tB-Gene\nb\tI-Gene\nc\tI-Chem\n"),
    }
    with pytest.raises(ValueError, match=r"test.tsv: tag\(s\) \{'B-Gene': 1, 'I-Gene': 1\}.*training split"):
        NerTask(files, {})


def test_labels_cover_b_and_i_of_every_training_type(tmp_path):
    iob = read_iob(write(tmp_path / "t.tsv", "a\tB-Disease\nb\tO\nc\tB-Chemical\nd\tI-Chemical\n"))
    assert label_list(iob) == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]


def test_word_tokenizer_tokenizes_words_as_in_running_text():
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR)
    words = ["Selegiline", "-", "induced", "postural", "hypotension", "in", "Parkinson", "'", "s", "disease"]
    running = tokenizer(" " + " ".join(words), add_special_tokens=False)["input_ids"]
    # Without a prefix space every word would be tokenized as if it started the text.
    assert tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"] != running
    adapted = word_tokenizer(tokenizer)
    assert adapted(words, is_split_into_words=True, add_special_tokens=False)["input_ids"] == running
    assert tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"] != running  # a copy


def test_word_tokenizer_real_modernbert_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(shared_path("modernbert-tokenizer"))
    words = ["Parkinson", "'", "s", "disease", "hypotension"]
    running = tokenizer(" " + " ".join(words), add_special_tokens=False)["input_ids"]
    assert word_tokenizer(tokenizer)(words, is_split_into_words=True, add_special_tokens=False)["input_ids"] == running


@pytest.mark.parametrize("length,size,stride", [(1, 5, 0), (5, 5, 2), (6, 5, 2), (23, 6, 2), (100, 10, 9)])
def test_window_spans_cover_everything_with_the_given_overlap(length, size, stride):
    spans = window_spans(length, size, stride)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(0 < end - start <= size for start, end in spans)
    assert all(nxt[0] == prev[1] - stride for prev, nxt in itertools.pairwise(spans))


def test_window_spans_refuse_a_stride_as_long_as_the_window():
    with pytest.raises(ValueError, match=r"stride=4 must be in \[0, 4\)"):
        window_spans(10, 4, 4)


def _iob_file(tmp_path, sentences):
    lines = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in sentence) for sentence in sentences)
    return read_iob(write(tmp_path / "data.tsv", lines + "\n"))


def _perfect_logits(encoded, num_labels):
    """Logits that put all weight on the gold label at every labelled position."""
    width = max(len(ids) for ids in encoded.dataset["input_ids"])
    logits = np.zeros((len(encoded.windows), width, num_labels))
    for w, labels in enumerate(encoded.dataset["labels"]):
        for position, label in enumerate(labels):
            if label != IGNORE_INDEX:
                logits[w, position, label] = 1.0
    return logits


def test_only_first_sub_tokens_are_labelled(tmp_path, tokenizer):
    iob = _iob_file(tmp_path, [[("Selegiline", "B-Chemical"), ("induced", "O"), ("hypotension", "B-Disease")]])
    labels = label_list(iob)
    encoded = encode_windows(iob, tokenizer, {label: i for i, label in enumerate(labels)}, 512, 0)
    row = encoded.dataset[0]
    encoding = tokenizer(iob.words[0], is_split_into_words=True)
    word_ids = encoding.word_ids()
    assert row["input_ids"] == encoding["input_ids"] and len(row["input_ids"]) > 5  # some word has sub-tokens
    firsts = [j for j, w in enumerate(word_ids) if w is not None and (j == 0 or word_ids[j - 1] != w)]
    assert [j for j, label in enumerate(row["labels"]) if label != IGNORE_INDEX] == firsts
    assert [labels[row["labels"][j]] for j in firsts] == iob.tags[0]


def test_long_sentences_are_windowed_and_merged_back_per_word(tmp_path, tokenizer):
    sentence = [("Patients", "O"), ("given", "O"), ("acetaminophen", "B-Chemical"), ("developed", "O"),
                ("fulminant", "B-Disease"), ("hepatic", "I-Disease"), ("necrosis", "I-Disease")]
    iob = _iob_file(tmp_path, [sentence * 6, sentence[:3], sentence * 3])
    labels = label_list(iob)
    encoded = encode_windows(iob, tokenizer, {label: i for i, label in enumerate(labels)}, 16, 4)
    assert all(len(ids) <= 16 for ids in encoded.dataset["input_ids"])
    assert encoded.split_sentences == 2 and len(encoded.windows) > 4
    merged = merge_word_predictions(_perfect_logits(encoded, len(labels)), encoded, iob, dict(enumerate(labels)))
    assert merged == iob.tags  # every word recovered exactly once, none truncated away


def test_overlapping_words_take_the_window_where_they_have_most_context(tmp_path, tokenizer):
    words = ["the"] * 10  # one token each
    iob = _iob_file(tmp_path, [[(w, "O") for w in words]])
    assert len(tokenizer(words, is_split_into_words=True)["input_ids"]) == 12
    encoded = encode_windows(iob, tokenizer, {"O": 0}, 8, 2)  # content windows [0, 6) and [4, 10)
    assert [w.words for w in encoded.windows] == [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9]]
    logits = np.zeros((2, 8, 2))
    logits[1, :, 1] = 1.0  # window 1 predicts label 1 everywhere, window 0 label 0
    merged = merge_word_predictions(logits, encoded, iob, {0: "from-window-0", 1: "from-window-1"})
    # Word 4 sits 1 token from window 0's cut and 0 from window 1's; word 5 the reverse: the overlap is halved.
    assert merged == [["from-window-0"] * 5 + ["from-window-1"] * 5]


@pytest.mark.slow
def test_ner_recipe_end_to_end_on_bc5cdr_slice(tmp_path, tiny_checkpoint):
    data_dir = shared_path("data/eval/bc5cdr_iob")
    results_file = tmp_path / "finetune_results_bc5cdr.json"
    returned = run_finetune_recipe([
        "--config", str(SMOKE_CONFIG), "--model_name_or_path", str(tiny_checkpoint), "--data_dir", str(data_dir),
        "--output_dir", str(tmp_path / "out"), "--results_file", str(results_file),
    ])
    results = json.loads(results_file.read_text())
    assert results == json.loads(json.dumps(returned))
    assert (results["task_type"], results["split"], results["checkpoint"]) == ("ner", "test", str(tiny_checkpoint))
    assert results["data_file"] == str(data_dir / "test.tsv")
    assert results["labels"] == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    seeds = results["seeds"]
    assert len(seeds) == 2 and results["num_examples"] == 100
    assert results["data_notes"]["sentences_split_into_windows"] > 0  # the smoke config's max_length forces cuts
    metrics = results["metrics"]
    assert {"precision", "recall", "f1", "f1_Chemical", "f1_Disease"} <= set(metrics)
    for p, r, f in zip(metrics["precision"]["values"], metrics["recall"]["values"], metrics["f1"]["values"]):
        assert f == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert metrics["f1"]["mean"] == pytest.approx(np.mean(metrics["f1"]["values"]))
    assert metrics["f1"]["std"] == pytest.approx(np.std(metrics["f1"]["values"], ddof=1))
    # Predicting O everywhere (the majority tag) finds no entity (F1 0); a few dozen steps already find some.
    assert min(metrics["f1"]["values"]) > 0
