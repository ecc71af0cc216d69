"""The streaming corpus: mixture, held-out split, per-process shards, resume, and bad input."""

import gzip
import json
import os
import re
import subprocess
import sys

import pyarrow as pa
import pytest
from hub_server import Commit, HubServer, Repo, _oid

from clinical_modernbert.configs import DataArguments, SourceConfig
from clinical_modernbert.data.sources import next_row
from clinical_modernbert.data.stream import STAT_FIELDS, EvaluationRows, TrainingStream
from clinical_modernbert.lexicon import Lexicon

DOC_ID = re.compile(r"\bdoc(\d+)x\b")


def write_jsonl(path, rows, compress=False):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return str(path)


def corpus(n, prefix="doc", start=0):
    words = "the patient received aspirin for chest pain and was discharged home in stable condition".split()
    return [{"text": f"{prefix}{i}x " + " ".join(words[: 3 + (i * 7) % len(words)]) * (1 + i % 5)}
            for i in range(start, start + n)]


def data_args(sources, **kw):
    values = dict(max_seq_length=64, eval_fraction=0.2, max_eval_documents=1000)
    values.update(kw)
    return DataArguments(sources=sources, **values)


def doc_ids(rows, tokenizer):
    return [int(m) for row in rows for m in DOC_ID.findall(tokenizer.decode(row["input_ids"]))]


def stats(rows):
    total = {}
    for row in rows:
        for source, counts in enumerate(row["stream_stats"]):
            acc = total.setdefault(source, [0] * len(STAT_FIELDS))
            for k, v in enumerate(counts):
                acc[k] += v
    return {s: dict(zip(STAT_FIELDS, v)) for s, v in total.items()}


@pytest.fixture
def one_source(tmp_path):
    return [{"name": "notes", "path": "json", "data_files": write_jsonl(tmp_path / "a.jsonl.gz", corpus(300), True)}]


def test_held_out_documents_never_reach_training(one_source, embedded_tokenizer):
    args = data_args(one_source)
    train = doc_ids(TrainingStream(args, embedded_tokenizer, passes=1), embedded_tokenizer)
    held = doc_ids(EvaluationRows(args, embedded_tokenizer), embedded_tokenizer)
    assert not set(train) & set(held)
    assert sorted(set(train) | set(held)) == list(range(300))
    assert len(held) == len(set(held)) and 30 < len(held) < 90  # ~20% of 300 (binomial sd ~7)


def test_rows_respect_length_and_documents_are_chunked_not_truncated(one_source, embedded_tokenizer):
    args = data_args(one_source, eval_fraction=0.0, max_seq_length=32)
    rows = list(TrainingStream(args, embedded_tokenizer, passes=1))
    assert all(len(r["input_ids"]) <= 32 and sum(r["doc_lengths"]) == len(r["input_ids"]) for r in rows)
    n_text_tokens = sum(len(t) for t in embedded_tokenizer([d["text"] for d in corpus(300)],
                                                            add_special_tokens=False)["input_ids"])
    n_special = sum(len(r["doc_lengths"]) for r in rows) * 2
    assert sum(len(r["input_ids"]) for r in rows) == n_text_tokens + n_special


def test_two_processes_read_disjoint_shards_covering_everything(one_source, embedded_tokenizer):
    args = data_args(one_source, eval_fraction=0.0)
    seen = [doc_ids(TrainingStream(args, embedded_tokenizer, rank=r, world_size=2, passes=1), embedded_tokenizer)
            for r in (0, 1)]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(300))


def test_mixture_is_deterministic_and_follows_weights(tmp_path, embedded_tokenizer):
    sources = [
        {"name": "a", "path": "json", "data_files": write_jsonl(tmp_path / "a.jsonl", corpus(400)), "weight": 3.0},
        {"name": "b", "path": "json", "data_files": write_jsonl(tmp_path / "b.jsonl", corpus(400, start=1000)),
         "weight": 1.0},
    ]
    args = data_args(sources, eval_fraction=0.0)
    first = list(TrainingStream(args, embedded_tokenizer, seed=3, passes=1))
    assert first == list(TrainingStream(args, embedded_tokenizer, seed=3, passes=1))
    assert first != list(TrainingStream(args, embedded_tokenizer, seed=4, passes=1))
    # all_exhausted: the pass ends when "b" (drawn with p=1/4) has given its 400 documents; by then "a" has been
    # drawn ~ NegativeBinomial(400, 1/4) times: mean 1200, sd sqrt(400 * 3/4) / (1/4) = 69. Allow 4 sd.
    counts = stats(first)
    assert counts[1]["documents"] == 400
    assert abs(counts[0]["documents"] - 1200) < 4 * 69


def test_bad_documents_are_skipped_and_counted(tmp_path, embedded_tokenizer, caplog):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"text": "good aspirin note"}).encode(), json.dumps({"text": "   "}).encode(),
             json.dumps({"text": None}).encode(), json.dumps({"text": 42}).encode(),
             b'{"text": "bad \xff\xfe bytes"}', json.dumps({"text": ""}).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    args = data_args([{"name": "messy", "path": "json", "data_files": str(path)}], eval_fraction=0.0)
    counts = stats(list(TrainingStream(args, embedded_tokenizer, passes=1)))[0]
    assert counts["documents"] == 2 and counts["skipped_empty"] == 2
    assert counts["skipped_non_string"] == 2 and counts["utf8_replaced"] == 1
    assert "messy" in caplog.text


def test_missing_text_field_names_source_and_columns(tmp_path, embedded_tokenizer):
    path = write_jsonl(tmp_path / "x.jsonl", [{"body": "aspirin"}])
    with pytest.raises(ValueError, match=r"Source 'x' has no column\(s\) \['text'\]; available columns: \['body'\]"):
        TrainingStream(data_args([{"name": "x", "path": "json", "data_files": path}]), embedded_tokenizer)


def test_empty_source_is_named(tmp_path, embedded_tokenizer):
    (tmp_path / "empty.jsonl").write_text("")
    spec = [{"name": "empty", "path": "json", "data_files": str(tmp_path / "empty.jsonl")}]
    with pytest.raises(ValueError, match="Source 'empty' yields no documents"):
        TrainingStream(data_args(spec), embedded_tokenizer)


@pytest.mark.parametrize("weight", [0, -1, float("inf"), float("nan"), "2"])
def test_mixture_weight_must_be_a_finite_positive_number(weight):
    with pytest.raises(ValueError, match="Source 'a': mixture weight must be a finite number > 0"):
        SourceConfig(name="a", path="json", data_files="x", weight=weight)


@pytest.mark.parametrize(("template", "problem"), [
    ("ICD {code", "is not a valid format string"),
    ("ICD {} {description}", "template field {} in"),
    ("{0}", "template field {0} in"),
    ("{code.upper}", "template field {code.upper} in"),
    ("ICD code", "names no column"),
])
def test_templates_are_checked_when_parsed(template, problem):
    with pytest.raises(ValueError, match=f"Source 'codes': .*{re.escape(problem)}"):
        SourceConfig(name="codes", path="csv", data_files="x.csv", template=template)
    SourceConfig(name="codes", path="json", data_files="x", template="{record[a.b]}: {description}")  # keys may hold .


def test_an_invalid_json_line_met_in_the_stream_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "notes.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "ok"}\n\n{"text": "cut\n{"text": "ok"}\n'))
    source = SourceConfig(name="notes", path="json", data_files=str(path))

    def rows():
        yield {"text": "ok"}
        raise pa.ArrowInvalid("JSON parse error: Invalid encoding in string. in row 1")  # pyarrow's wrong reason

    documents = rows()
    assert next_row(documents, [source]) == {"text": "ok"}
    with pytest.raises(ValueError, match=re.escape(f"Source 'notes': {path} line 3 is not valid JSON")):
        next_row(documents, [source])
    path.write_bytes(gzip.compress(b'{"text": "ok"}\n'))  # no invalid line found: pyarrow's own error stays
    with pytest.raises(pa.ArrowInvalid):
        next_row(rows_raising_at_once(), [source])


def rows_raising_at_once():
    raise pa.ArrowInvalid("JSON parse error")
    yield


def test_code_table_becomes_text(tmp_path, embedded_tokenizer):
    table = tmp_path / "icd9.tsv"
    table.write_text("code\tdescription\n250.00\tDiabetes mellitus without mention of complication\n")
    spec = [{"name": "icd9", "path": "csv", "data_files": str(table), "delimiter": "\t",
             "template": "ICD-9 code {code}: {description}"}]
    rows = list(TrainingStream(data_args(spec, eval_fraction=0.0), embedded_tokenizer, passes=1))
    assert embedded_tokenizer.decode(rows[0]["input_ids"], skip_special_tokens=True) == (
        "ICD-9 code 250.00: Diabetes mellitus without mention of complication"
    )


def test_medical_flags_travel_with_tokens(tmp_path, embedded_tokenizer):
    spec = [{"name": "n", "path": "json",
             "data_files": write_jsonl(tmp_path / "n.jsonl", [{"text": "Started aspirin for atrial fibrillation."}])}]
    lexicon = Lexicon(["aspirin", "atrial fibrillation"], match_codes=False)
    row = next(iter(TrainingStream(data_args(spec, eval_fraction=0.0), embedded_tokenizer, lexicon, passes=1)))
    tokens = embedded_tokenizer.convert_ids_to_tokens(row["input_ids"])
    flagged = "".join(t if f else "|" for t, f in zip(tokens, row["term_flags"]))
    assert [p.replace("Ġ", " ").strip() for p in flagged.split("|") if p] == ["aspirin", "atrial fibrillation"]
    assert row["term_flags"].count(1) == 2


def test_resumed_stream_continues_with_the_next_rows(one_source, embedded_tokenizer):
    args = data_args(one_source, eval_fraction=0.0, max_seq_length=48)
    uninterrupted = list(TrainingStream(args, embedded_tokenizer, block_chars=2_000, passes=1))
    stream = TrainingStream(args, embedded_tokenizer, block_chars=2_000, passes=1)
    consumed = []
    for row in stream:
        consumed.append(row)
        if len(consumed) == 37:
            break
    state = json.loads(json.dumps(stream.state_dict(consumed[-1]["stream_position"])))  # survives JSON
    resumed = TrainingStream(args, embedded_tokenizer, block_chars=2_000, passes=1)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert consumed + rest == uninterrupted  # rows, positions and counters (none counted twice)


def test_training_stream_starts_its_next_pass_itself(one_source, embedded_tokenizer):
    """The stream never ends: after the last document it packs on into the next pass, whose documents are the
    same ones (counted again); a resume from a row of the second pass continues there."""
    args = data_args(one_source, eval_fraction=0.0, max_seq_length=48)
    one_pass = list(TrainingStream(args, embedded_tokenizer, block_chars=2_000, passes=1))
    two = list(TrainingStream(args, embedded_tokenizer, block_chars=2_000, passes=2))
    assert stats(two)[0]["documents"] == 2 * stats(one_pass)[0]["documents"] == 600
    assert sorted(doc_ids(two, embedded_tokenizer)) == sorted(2 * doc_ids(one_pass, embedded_tokenizer))
    endless = TrainingStream(args, embedded_tokenizer, block_chars=2_000)
    same = len(two) - 64  # the finite stream flushes its (at most 64) open rows at the end; the endless one packs on
    assert [row for _, row in zip(range(same), endless)] == two[:same]
    cut = len(one_pass) + 20
    resumed = TrainingStream(args, embedded_tokenizer, block_chars=2_000, passes=2)
    resumed.load_state_dict(endless.state_dict(two[cut - 1]["stream_position"]))
    assert list(resumed) == two[cut:]


def test_rows_count_what_they_hold(tmp_path, embedded_tokenizer):
    """Per-source counters are those of the rows themselves (not of blocks read ahead): summed over any prefix of
    rows, tokens equal the rows' lengths, and a document split over rows counts once."""
    sources = [{"name": "a", "path": "json", "data_files": write_jsonl(tmp_path / "a.jsonl", corpus(200))},
               {"name": "b", "path": "json", "data_files": write_jsonl(tmp_path / "b.jsonl", corpus(50, start=500))}]
    rows = list(TrainingStream(data_args(sources, eval_fraction=0.0, max_seq_length=24), embedded_tokenizer, passes=1))
    for prefix in (rows[:1], rows[:7], rows):
        counted = stats(prefix)
        assert sum(c["tokens"] for c in counted.values()) == sum(len(r["input_ids"]) for r in prefix)
    chunks = sum(len(r["doc_lengths"]) for r in rows)
    documents = sum(c["documents"] for c in stats(rows).values())
    assert documents == len(doc_ids(rows, embedded_tokenizer)) < chunks  # each "docNx" opens its document


def test_evaluation_splits_read_every_document_once(tmp_path, embedded_tokenizer):
    """`all` reads each document of each source exactly once, however the weights oversample in training; the
    held-out set holds no document twice."""
    sources = [{"name": "a", "path": "json", "data_files": write_jsonl(tmp_path / "a.jsonl", corpus(300)),
                "weight": 1.0},
               {"name": "b", "path": "json", "data_files": write_jsonl(tmp_path / "b.jsonl", corpus(20, start=1000)),
                "weight": 5.0}]
    args = data_args(sources, eval_fraction=0.2)
    every = doc_ids(EvaluationRows(args, embedded_tokenizer, held_out=False), embedded_tokenizer)
    assert sorted(every) == list(range(300)) + list(range(1000, 1020))
    held = doc_ids(EvaluationRows(args, embedded_tokenizer), embedded_tokenizer)
    assert len(held) == len(set(held)) > 0
    trained = doc_ids(TrainingStream(args, embedded_tokenizer, passes=1), embedded_tokenizer)
    assert sum(i >= 1000 for i in trained) > 20  # training oversamples "b" by its weight


def test_evaluation_documents_are_those_of_the_rows_whole(one_source, embedded_tokenizer):
    """`documents()` reads what the rows are read from (held-out: the first `max_eval_documents`), neither cut to
    `eval_tokens_per_document` nor packed."""
    args = data_args(one_source, max_eval_documents=20, max_eval_tokens_per_document=10)
    rows = EvaluationRows(args, embedded_tokenizer)
    documents = list(rows.documents())
    texts = [embedded_tokenizer.decode(ids) for ids in documents]
    assert [int(DOC_ID.search(t)[1]) for t in texts] == sorted(doc_ids(rows, embedded_tokenizer))  # reading order
    assert len(documents) == 20 and max(len(ids) for ids in documents) > 10
    expected = {r["text"]: embedded_tokenizer(r["text"], add_special_tokens=False)["input_ids"] for r in corpus(300)}
    assert all(expected[text] == ids for text, ids in zip(texts, documents))


def test_no_training_document_is_an_error_not_an_endless_loop(tmp_path, embedded_tokenizer):
    path = write_jsonl(tmp_path / "blank.jsonl", [{"text": "  "}] * 5)
    stream = TrainingStream(data_args([{"name": "blank", "path": "json", "data_files": path}]), embedded_tokenizer)
    with pytest.raises(ValueError, match=r"No training document in a whole pass.*blank"):
        next(iter(stream))


HUB_STREAM = """
import json, sys
from transformers import AutoTokenizer
from clinical_modernbert.assets import EMBEDDED_TOKENIZER_DIR
from clinical_modernbert.configs import DataArguments
from clinical_modernbert.data.stream import TrainingStream

tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR)
args = DataArguments(sources=json.loads(sys.argv[1]), max_seq_length=64, eval_fraction=0.2, max_eval_documents=1000)
keys = ("input_ids", "doc_lengths", "stream_stats")
rows = [{k: row[k] for k in keys} for row in TrainingStream(args, tokenizer, passes=1)]
try:
    TrainingStream(DataArguments(sources=[{"name": "gone", "path": "test-org/no-such-corpus"}]), tokenizer)
    error = None
except ValueError as e:
    error = f"{type(e).__name__}: {e}"
print(json.dumps({"rows": rows, "error": error}))
"""


def test_hub_dataset_streams_like_the_same_local_file(tmp_path, embedded_tokenizer):
    """A Hub source goes through the same `load_dataset(..., streaming=True)` as local files: served by a local Hub
    stand-in (HF_ENDPOINT), it yields the rows the local copy of its file yields; a missing dataset is named."""
    data = "".join(json.dumps(r) + "\n" for r in corpus(300)).encode()
    local = [{"name": "notes", "path": "json", "data_files": write_jsonl(tmp_path / "a.jsonl", corpus(300))}]
    hub_source = [{"name": "notes", "path": "test-org/notes", "split": "train"}]
    with HubServer() as hub:
        repo = Repo("dataset", private=False, sdk=None)
        repo.branches["main"] = [Commit(_oid(data), "add data", {"data/train-00000.jsonl": data,
                                                                 "README.md": b"# notes\n"})]
        hub.repos[("dataset", "test-org/notes")] = repo
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
               "HF_HOME": str(tmp_path / "hf_home")}
        done = subprocess.run([sys.executable, "-c", HUB_STREAM, json.dumps(hub_source)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        downloads = [path for method, path in hub.requests if method == "GET" and path.endswith("train-00000.jsonl")]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = [{k: row[k] for k in ("input_ids", "doc_lengths", "stream_stats")}
                for row in TrainingStream(data_args(local), embedded_tokenizer, passes=1)]
    assert downloads and result["rows"] == expected
    assert stats(result["rows"])[0]["documents"] == stats(expected)[0]["documents"] > 200
    assert "gone" in result["error"] and "test-org/no-such-corpus" in result["error"]
