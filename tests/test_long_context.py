"""The long-context probe: the same masked tokens near each document's end, predicted with more and more context."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import xxhash
from conftest import REPO_ROOT, cpu_ddp_launcher, load_script, tiny_config
from transformers import ModernBertForMaskedLM, PretrainedConfig
from transformers.modeling_outputs import MaskedLMOutput

from clinical_modernbert.configs import DataArguments, EvaluationArguments, ModelArguments
from clinical_modernbert.data.stream import is_held_out
from clinical_modernbert.long_context import (
    LongContextProbe,
    check_context_lengths,
    format_long_context_table,
    read_probe_documents,
    run_long_context_probe,
)
from clinical_modernbert.tokenizer_training import train_bpe_tokenizer

WORDS = ("the patient was started on metformin for diabetes mellitus with a history of heart failure and given "
         "warfarin daily dose mg after discharge presented pneumonia aspirin insulin").split()


def text(words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer([text(40, seed) for seed in range(200)], vocab_size=400)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Short notes and a few long ones (~300-600 tokens)."""
    folder = tmp_path_factory.mktemp("long_context")
    texts = [text(30 if i % 3 else 250 + 20 * i, seed=1000 + i) for i in range(15)]
    (folder / "notes.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return folder


def data_args(files) -> DataArguments:
    source = {"name": "notes", "path": "json", "data_files": str(files / "notes.jsonl")}
    return DataArguments(sources=[source], max_seq_length=64)


def eval_args(**overrides) -> EvaluationArguments:
    values = dict(split="all", use_default_lexicon=False, top_k=[1, 5], probe_tokens=32, context_lengths=[64, 128, 256])
    return EvaluationArguments(**{**values, **overrides})


class InductionModel(torch.nn.Module):
    """A hand-written masked LM that can only use context: at each [MASK], take the nearest unmasked token before it
    (t, o positions back) and predict the token o positions after the previous occurrence of t further back; where t
    has no earlier occurrence in the input, every logit is 0 (no prediction)."""

    def __init__(self, vocab_size: int, mask_id: int, max_positions: int = 4096):
        super().__init__()
        self.config = PretrainedConfig(max_position_embeddings=max_positions)
        self.vocab_size, self.mask_id = vocab_size, mask_id
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the Trainer places the model by its parameters

    def forward(self, input_ids, attention_mask, labels=None):
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        for row, ids in enumerate(input_ids.tolist()):
            ids = ids[: int(attention_mask[row].sum())]
            for i in (i for i, token in enumerate(ids) if token == self.mask_id):
                key = next((j for j in range(i - 1, -1, -1) if ids[j] != self.mask_id), None)
                earlier = [q for q in range(key or 0) if ids[q] == ids[key]] if key is not None else []
                if earlier and earlier[-1] + i - key < len(ids):
                    logits[row, i, ids[earlier[-1] + i - key]] = 1.0
        return MaskedLMOutput(loss=torch.zeros(()), logits=logits)


def induction_document(rng: random.Random, ordinary: list[int], length: int, copy_back: int, tail: int) -> list[int]:
    """Filler, then a key token and `tail` distinct tokens, then filler, then the same key and tail at the end; the
    first copy starts `copy_back` tokens from the end. Key and tail tokens occur nowhere else."""
    keys = rng.sample(ordinary, tail + 1)
    filler = [token for token in ordinary if token not in keys]
    before = length - copy_back
    middle = copy_back - 2 * (tail + 1)
    return ([rng.choice(filler) for _ in range(before)] + keys + [rng.choice(filler) for _ in range(middle)]
            + keys)


def test_a_model_that_uses_distant_context_gains_when_the_context_reaches_the_answer(tokenizer, tmp_path):
    """Each scored token's only clue sits ~700 (documents 0, 1) or ~1,500 (documents 2, 3) tokens back: the
    induction model scores 0 until the context holds the clue, then every position."""
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in range(50, len(tokenizer)) if i not in special]
    rng = random.Random(0)
    documents = [induction_document(rng, ordinary, 2100, back, 64) for back in (700, 700, 1500, 1500)]
    args = eval_args(probe_tokens=64, context_lengths=[128, 256, 512, 1024, 2048])
    probe = LongContextProbe(tokenizer, args)
    model = InductionModel(len(tokenizer), tokenizer.mask_token_id)
    section = probe.measure(model, documents, args.context_lengths, [4096], str(tmp_path))
    near = sum(len(probe.scored_positions(d)) for d in documents[:2])
    assert section["positions"] == near + sum(len(probe.scored_positions(d)) for d in documents[2:])
    assert section["positions"] > 20 and 0 < near < section["positions"]
    assert section["context_lengths"] == [128, 256, 512, 1024, 2048] and section["dropped_lengths"] == [4096]
    assert section["documents"] == 4 and section["probe_tokens"] == 64
    top_1 = [section["top_k"][str(n)]["top_1"] for n in section["context_lengths"]]
    assert top_1 == pytest.approx([0, 0, 0, near / section["positions"], 1])
    assert [section["top_k"][str(n)]["top_5"] for n in section["context_lengths"]] == top_1  # ids 0-3 never answer


def rows_by_document_index(probe: LongContextProbe, documents, length: int) -> list[dict]:
    """Per row: its labelled positions as indexes into the document, with labels and inputs there."""
    found = []
    for ids, row in zip(documents, probe.rows(documents, length)):
        start = len(ids) - (length - 2)
        labels, inputs = np.asarray(row["labels"]), np.asarray(row["input_ids"])
        assert len(inputs) == length and inputs[0] == probe.tokenizer.cls_token_id
        assert inputs[-1] == probe.tokenizer.sep_token_id
        where = np.flatnonzero(labels != -100)
        unmasked = np.ones(length, dtype=bool)
        unmasked[[0, -1, *where]] = False
        assert (inputs[unmasked] == np.asarray(ids)[start + np.flatnonzero(unmasked) - 1]).all()  # context intact
        found.append({"at": (start + where - 1).tolist(), "labels": labels[where].tolist(),
                      "inputs": inputs[where].tolist()})
    return found


def test_every_length_scores_the_same_tokens_masked_and_only_in_the_tail(tokenizer):
    rng = random.Random(1)
    documents = [[rng.randrange(10, len(tokenizer)) for _ in range(rng.randint(260, 400))] for _ in range(40)]
    probe = LongContextProbe(tokenizer, eval_args(probe_tokens=32, mlm_probability=0.25))
    by_length = {n: rows_by_document_index(probe, documents, n) for n in (64, 128, 256)}
    assert by_length[64] == by_length[128] == by_length[256]
    scored = 0
    for ids, row in zip(documents, by_length[64]):
        assert all(len(ids) - 32 <= at for at in row["at"])
        assert row["labels"] == [ids[at] for at in row["at"]]
        assert set(row["inputs"]) <= {tokenizer.mask_token_id}
        scored += len(row["at"])
    # 40 x 32 tail tokens at p = 0.25: 320 expected, standard deviation ~15.5; special ids are never scored
    specials = sum(t in tokenizer.all_special_ids for ids in documents for t in ids[-32:])
    expected = 0.25 * (40 * 32 - specials)
    assert abs(scored - expected) < 4 * (expected * 0.75) ** 0.5
    # a document's positions depend on its ids and the seed only: not on its neighbours or its row
    reversed_rows = rows_by_document_index(probe, documents[::-1], 128)[::-1]
    assert reversed_rows == by_length[128]
    reseeded = rows_by_document_index(LongContextProbe(tokenizer, eval_args(seed=7, mlm_probability=0.25)),
                                      documents, 64)
    assert [r["at"] for r in reseeded] != [r["at"] for r in by_length[64]]


def independent_positions(ids: list[int], probe_tokens: int, probability: float, seed: int) -> list[int]:
    """The masking rule written out again: uniforms from (seed, the document's ids) over the last tokens."""
    key = xxhash.xxh64_intdigest(np.asarray(ids, dtype=np.int64).tobytes(), seed=seed)
    draws = torch.rand(probe_tokens, generator=torch.Generator().manual_seed(key), dtype=torch.float64)
    return [len(ids) - probe_tokens + i for i in range(probe_tokens) if draws[i] < probability]


def test_tiny_modernbert_probe_equals_a_forward_pass_per_row(tokenizer, files, tmp_path):
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(tiny_config(tokenizer, vocab_size=448)).eval()
    args = eval_args(context_lengths=[64, 128, 256, 1024], max_probe_documents=3, per_device_eval_batch_size=2)
    section = run_long_context_probe(model, tokenizer, data_args(files), args, str(tmp_path))

    texts = [json.loads(line)["text"] for line in (files / "notes.jsonl").read_text().splitlines()]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert max(len(ids) + 2 for ids in encoded) < 1024
    long = [ids for ids in encoded if len(ids) + 2 >= 256][:3]
    assert len(long) == 3
    expected = {"context_lengths": [64, 128, 256], "dropped_lengths": [1024], "documents": 3, "probe_tokens": 32}
    assert {key: section[key] for key in expected} == expected
    for length in (64, 128, 256):
        ranks = []
        for ids in long:
            at = independent_positions(ids, 32, args.mlm_probability, args.seed)
            context = list(ids[len(ids) - (length - 2):])
            for position in at:
                context[position - (len(ids) - (length - 2))] = tokenizer.mask_token_id
            row = torch.tensor([[tokenizer.cls_token_id, *context, tokenizer.sep_token_id]])
            with torch.no_grad():
                logits = model(input_ids=row).logits[0]
            for position in at:
                scores = logits[position - (len(ids) - (length - 2)) + 1]
                ranks.append(1 + int((scores > scores[ids[position]]).sum()))
        assert section["positions"] == len(ranks) > 5
        accuracies = {f"top_{k}": sum(r <= k for r in ranks) / len(ranks) for k in (1, 5)}
        assert section["top_k"][str(length)] == pytest.approx(accuracies)


def test_lengths_beyond_the_model_or_every_document_or_invalid_are_errors(tokenizer, files, tmp_path):
    model = ModernBertForMaskedLM(tiny_config(tokenizer, vocab_size=448, max_position_embeddings=128))
    with pytest.raises(ValueError, match=r"context_lengths \[256\] exceed the model's max_position_embeddings=128"):
        run_long_context_probe(model, tokenizer, data_args(files), eval_args(), str(tmp_path))
    with pytest.raises(ValueError, match="needs context_lengths"):
        check_context_lengths(None, 128)
    with pytest.raises(ValueError, match=r"no document of \['notes'\] \(all split\) is as long as the shortest of "
                                         r"context_lengths \[2048, 4096\]: the longest has \d+ tokens"):
        read_probe_documents(data_args(files), eval_args(context_lengths=[2048, 4096]), tokenizer)
    for lengths in ([128, 64], [64, 64], [], [16, 128]):  # not increasing, empty, shorter than probe_tokens + 2
        with pytest.raises(ValueError, match="context_lengths must be increasing lengths of at least"):
            eval_args(context_lengths=lengths)


@pytest.mark.parametrize("split", ["all", "held_out"])
def test_documents_are_the_first_long_enough_of_the_evaluated_ones(tokenizer, files, split):
    args = eval_args(context_lengths=[64, 256, 1024], max_probe_documents=2, split=split)
    data = data_args(files)
    data.eval_fraction = 0.5
    documents, kept, dropped = read_probe_documents(data, args, tokenizer)
    texts = [json.loads(line)["text"] for line in (files / "notes.jsonl").read_text().splitlines()]
    evaluated = [t for t in texts if split == "all" or is_held_out(t, 0.5)]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in evaluated]
    assert kept == [64, 256] and dropped == [1024]
    assert documents == [ids for ids in encoded if len(ids) + 2 >= 256][:2] and documents
    assert split == "all" or len(evaluated) < len(texts)


SECTION = {"context_lengths": [512, 1024], "dropped_lengths": [8192], "documents": 3, "probe_tokens": 128,
           "positions": 57, "top_k": {"512": {"top_1": 0.25, "top_5": 0.5}, "1024": {"top_1": 0.3, "top_5": 0.6}}}


def test_table():
    table = format_long_context_table(SECTION)
    assert "| context length | positions | Top-1 | Top-5 |" in table
    assert "| 1024 | 57 | 30.00 | 60.00 |" in table and "[8192]" in table


def load_recipe():
    return load_script("recipes/evaluate_mlm.py")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    ModernBertForMaskedLM(tiny_config(tokenizer, vocab_size=448, max_position_embeddings=512)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_recipe_rejects_lengths_beyond_the_model_before_reading_data(files, model_dir):
    source = {"name": "notes", "path": "json", "data_files": str(files / "missing.jsonl")}
    data = DataArguments(sources=[source], max_seq_length=64)
    with pytest.raises(ValueError, match="context_lengths=1024 exceeds the model's max_position_embeddings=512"):
        load_recipe().main(ModelArguments(model_name_or_path=str(model_dir)), data,
                           eval_args(context_lengths=[64, 1024]))


def run_recipe(files, model_dir, tmp_path, *launcher: str) -> tuple[dict, str, bytes]:
    """`recipes/evaluate_mlm.py --context_lengths 64 128 256 512`: the probe's section, what it printed, the plot."""
    config = tmp_path / "eval.yaml"
    config.write_text(f"sources:\n  - name: notes\n    path: json\n    data_files: {files / 'notes.jsonl'}\n"
                      "split: all\nmax_seq_length: 64\nuse_default_lexicon: false\nprobe_tokens: 32\n")
    output = tmp_path / f"out{len(launcher)}" / "results.json"
    run = subprocess.run(
        [*(launcher or [sys.executable]), str(REPO_ROOT / "recipes" / "evaluate_mlm.py"), "--config", str(config),
         "--model_name_or_path", str(model_dir), "--output_json", str(output), "--per_device_eval_batch_size", "3",
         "--context_lengths", "64", "128", "256", "512"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(output.read_text())["long_context"], run.stdout, (output.parent / "long_context.png").read_bytes()


def test_recipe_writes_the_section_and_the_plot(tokenizer, files, model_dir, tmp_path):
    section, stdout, plot = run_recipe(files, model_dir, tmp_path)
    assert section["context_lengths"] == [64, 128, 256] and section["dropped_lengths"] == [512]
    texts = [json.loads(line)["text"] for line in (files / "notes.jsonl").read_text().splitlines()]
    long = [t for t in texts if len(tokenizer(t)["input_ids"]) >= 256]
    assert section["documents"] == len(long) > 1 and section["probe_tokens"] == 32 and section["positions"] > 0
    assert set(section["top_k"]) == {"64", "128", "256"}
    assert all(list(figures) == ["top_1", "top_5", "top_10", "top_25"] for figures in section["top_k"].values())
    assert "| context length | positions | Top-1 | Top-5 | Top-10 | Top-25 |" in stdout
    assert plot.startswith(b"\x89PNG")


@pytest.mark.slow
def test_two_processes_give_the_section_of_one(files, model_dir, tmp_path):
    one, _, _ = run_recipe(files, model_dir, tmp_path)
    two, _, _ = run_recipe(files, model_dir, tmp_path, *cpu_ddp_launcher())
    assert two == one
