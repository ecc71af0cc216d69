"""The pretraining building blocks: the evaluation set is streamed once and reused while its inputs are unchanged."""

import json
import logging
import re

import pytest
from transformers import AutoTokenizer

import clinical_modernbert.pretraining as pretraining
from clinical_modernbert.artifacts import EVAL_SET_DIR
from clinical_modernbert.assets import EMBEDDED_TOKENIZER_DIR
from clinical_modernbert.configs import DataArguments, PretrainTrainingArguments
from clinical_modernbert.data.stream import is_held_out
from clinical_modernbert.lexicon import Lexicon
from clinical_modernbert.pretraining import build_eval_set


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps({"text": f"note {i}: aspirin given for chest pain. " * (1 + i % 4)}) + "\n"
                            for i in range(400)))
    return str(path)


@pytest.fixture
def streams_built(monkeypatch):
    """How many evaluation streams `build_eval_set` reads."""
    built = []
    real = pretraining.EvaluationRows

    def counting(*args, **kwargs):
        built.append("eval" if kwargs.get("held_out", True) else "all")
        return real(*args, **kwargs)

    monkeypatch.setattr(pretraining, "EvaluationRows", counting)
    return built


def build(tmp_path, corpus, tokenizer, lexicon=None, seed=0, overwrite=False, **data):
    data_args = DataArguments(sources=[{"name": "notes", "path": "json", "data_files": corpus}],
                              **{"max_seq_length": 64, "eval_fraction": 0.2, "max_eval_documents": 40, **data})
    args = PretrainTrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, report_to="none", seed=seed,
                          overwrite_output_dir=overwrite)
    return build_eval_set(data_args, tokenizer, lexicon, args)


def fresh_tokenizer():
    return AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR)


def test_eval_set_is_streamed_once_then_loaded(tmp_path, corpus, embedded_tokenizer, streams_built, caplog):
    lexicon = Lexicon(["aspirin", "chest pain"], match_codes=False)
    first = build(tmp_path, corpus, embedded_tokenizer, lexicon)
    assert streams_built == ["eval"] and (tmp_path / "run" / EVAL_SET_DIR).is_dir()
    with caplog.at_level(logging.INFO, logger="clinical_modernbert.pretraining"):
        again = build(tmp_path, corpus, embedded_tokenizer, lexicon)
    assert streams_built == ["eval"] and "evaluation rows loaded from" in caplog.text
    assert again.to_list() == first.to_list() and sum(map(len, first["doc_lengths"])) == 40
    assert any(flag for row in again["term_flags"] for flag in row)


@pytest.mark.parametrize(
    "change",
    [{"max_eval_documents": 30}, {"max_seq_length": 128}, {"seed": 1},
     {"lexicon": Lexicon(["pain"], match_codes=False)}, {"tokenizer": "other"}],
    ids=["documents", "length", "seed", "lexicon", "tokenizer"],
)
def test_eval_set_is_rebuilt_when_its_inputs_change(tmp_path, corpus, embedded_tokenizer, streams_built, change):
    build(tmp_path, corpus, embedded_tokenizer)
    tokenizer = embedded_tokenizer
    if change.pop("tokenizer", None):
        tokenizer = fresh_tokenizer()
        tokenizer.add_tokens(["omeprazole"])
    rebuilt = build(tmp_path, corpus, tokenizer, **change)
    assert streams_built == ["eval", "eval"]
    assert build(tmp_path, corpus, tokenizer, **change).to_list() == rebuilt.to_list()
    assert streams_built == ["eval", "eval"]


def test_eval_set_is_rebuilt_when_a_local_file_changes(tmp_path, corpus, embedded_tokenizer, streams_built):
    build(tmp_path, corpus, embedded_tokenizer)
    with open(corpus, "a") as f:
        f.write(json.dumps({"text": "note 400: metformin for type 2 diabetes."}) + "\n")
    build(tmp_path, corpus, embedded_tokenizer)
    assert streams_built == ["eval", "eval"]


def test_overwrite_output_dir_rebuilds_the_eval_set(tmp_path, corpus, embedded_tokenizer, streams_built):
    build(tmp_path, corpus, embedded_tokenizer)
    build(tmp_path, corpus, embedded_tokenizer, overwrite=True)
    assert streams_built == ["eval", "eval"]


def test_tokenizer_calls_do_not_change_the_fingerprint(corpus):
    tokenizer = fresh_tokenizer()
    data_args = DataArguments(sources=[{"name": "notes", "path": "json", "data_files": corpus}])
    before = pretraining.eval_set_fingerprint(data_args, tokenizer, None, 0)
    tokenizer(["a note"], truncation=True, max_length=4, padding="max_length")
    assert tokenizer.backend_tokenizer.truncation is not None
    assert pretraining.eval_set_fingerprint(data_args, tokenizer, None, 0) == before


def test_a_long_held_out_document_is_cut_and_counted(tmp_path, corpus, embedded_tokenizer, caplog):
    """One 5 MB note held out made 17,765 evaluation rows against max_eval_documents: 4; now it is cut to four rows'
    worth of tokens, and the log counts documents and rows apart."""
    body = "the patient received aspirin for chest pain and was discharged home in stable condition. " * 57_000
    long_note = next(text for k in range(1000) if is_held_out(text := f"long note {k}: {body}", 0.2))
    assert len(long_note) > 5_000_000
    path = tmp_path / "with_long.jsonl"
    path.write_text(json.dumps({"text": long_note}) + "\n" + open(corpus).read())
    with caplog.at_level(logging.INFO, logger="clinical_modernbert.pretraining"):
        rows = build(tmp_path, str(path), embedded_tokenizer, max_eval_documents=4)
    tokens = sum(map(len, rows["input_ids"]))
    assert len(rows) <= 4 + 3 and tokens <= 4 * 64 + 3 * 64  # 4 rows for the long note, at most one per short note
    match = re.search(r"Data: 4 held-out documents in (\d+) evaluation rows of up to 64 tokens; 1 document\(s\) "
                      r"longer than max_eval_tokens_per_document=248 cut to it \((\d+) tokens left out\)", caplog.text)
    assert match and int(match[1]) == len(rows) and int(match[2]) > 500_000
    # a limit of its own, and a changed limit rebuilds the set
    assert sum(map(len, build(tmp_path, str(path), embedded_tokenizer, max_eval_documents=4,
                              max_eval_tokens_per_document=20)["doc_lengths"])) == 4
    with pytest.raises(ValueError, match="max_eval_tokens_per_document must be >= 1"):
        DataArguments(max_eval_tokens_per_document=0)
