"""Top-k evaluation inside the Trainer and `recipes/evaluate_mlm.py`, checked against direct computation on the
logits."""

import json
import math
import random
import subprocess
import sys

import evaluate
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, cpu_ddp_launcher, load_script, tiny_config
from transformers import EvalPrediction, ModernBertForMaskedLM, ModernBertModel

from clinical_modernbert.attention import packed_attention_inputs
from clinical_modernbert.configs import DataArguments, EvaluationArguments, ModelArguments
from clinical_modernbert.evaluation import (
    build_eval_dataset,
    evaluate_masked_lm,
    predict_masked,
)
from clinical_modernbert.lexicon import Lexicon
from clinical_modernbert.masking import MedicalMaskingCollator
from clinical_modernbert.metrics import MLM_TOPK_ACCURACY
from clinical_modernbert.metrics.mlm_topk_metrics import MLMTopKMetrics, top_k_ids
from clinical_modernbert.tokenizer_training import train_bpe_tokenizer

DRUGS = ["metformin", "warfarin", "aspirin", "insulin", "heparin"]
DISEASES = ["atrial fibrillation", "diabetes mellitus", "heart failure", "pneumonia"]
WORDS = "the patient was started on for and with a history of presented daily dose mg given after discharge".split()


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)

    def sentence():
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 10))]
        return " ".join([*words, rng.choice(DRUGS), "for", rng.choice(DISEASES)]) + "."

    return [" ".join(sentence() for _ in range(rng.randint(1, 4))) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(documents(300), vocab_size=400)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_data")
    (folder / "eval.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in documents(60, seed=1)))
    (folder / "lexicon.txt").write_text("\n".join(DRUGS + DISEASES) + "\n")
    (folder / "empty.jsonl").write_text("")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    ModernBertForMaskedLM(tiny_config(tokenizer, vocab_size=448)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def data_args(files, eval_fraction: float = 0.01, **source) -> DataArguments:
    source = {"name": "notes", "path": "json", "data_files": str(files / "eval.jsonl"), **source}
    return DataArguments(sources=[source], max_seq_length=64, eval_fraction=eval_fraction)


def eval_args(files, **overrides) -> EvaluationArguments:
    values = dict(split="all", lexicon_files=[str(files / "lexicon.txt")], use_default_lexicon=False, top_k=[1, 5, 25])
    return EvaluationArguments(**{**values, **overrides})


def test_top_k_ids_orders_ties_like_a_stable_sort():
    scores = torch.randint(0, 4, (200, 15), generator=torch.Generator().manual_seed(0)).float()
    for k in range(1, 16):
        expected = [sorted(range(15), key=lambda v: (-row[v], v))[:k] for row in scores.tolist()]
        assert top_k_ids(scores, k).tolist() == expected
    continuous = torch.randn(50, 1000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(top_k_ids(continuous, 5), continuous.sort(dim=-1, descending=True, stable=True).indices[:, :5])


def random_batch(batch: int, seq: int, vocab: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq, vocab, generator=g)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    labels[torch.rand(batch, seq, generator=g) > 0.3] = -100
    medical = torch.randint(0, 2, (batch, seq), generator=g)
    mask_input = (torch.rand(batch, seq, generator=g) < 0.8).long()
    return logits, labels, medical, mask_input


def test_preprocess_keeps_top_ids_and_nll_of_masked_positions_dense_or_sparse():
    metrics = MLMTopKMetrics([1, 3])
    logits, labels, medical, _ = random_batch(2, 9, 20, seed=0)
    masked = labels != -100
    top, nll = metrics.preprocess_logits_for_metrics(logits, labels)
    sparse_top, sparse_nll = metrics.preprocess_logits_for_metrics(logits[masked], (labels, medical))
    assert torch.equal(top, sparse_top) and torch.equal(nll, sparse_nll)
    assert top.shape == (2, 9, 3) and (top[~masked] == -100).all() and (nll[~masked] == 0).all()
    assert torch.equal(top[masked], top_k_ids(logits[masked], 3))
    assert torch.allclose(nll[masked], F.cross_entropy(logits[masked], labels[masked], reduction="none"))


def test_preprocess_rejects_k_beyond_vocabulary_and_mismatched_logits():
    logits, labels, *_ = random_batch(1, 6, 20, seed=1)
    with pytest.raises(ValueError, match="top_k=25 exceeds the vocabulary size 20"):
        MLMTopKMetrics([1, 25]).preprocess_logits_for_metrics(logits, labels)
    labels = torch.arange(6)[None]  # six masked positions, but sparse logits for two
    with pytest.raises(ValueError, match="do not match labels of shape \\(1, 6\\) with 6 masked positions"):
        MLMTopKMetrics([1]).preprocess_logits_for_metrics(logits[0, :2], labels)


def test_batched_compute_metrics_equal_one_pass_over_all_logits():
    metrics = MLMTopKMetrics([1, 2, 5])
    batches = [random_batch(2, seq, 30, seed) for seed, seq in enumerate((7, 11, 5))]
    for _ in range(2):  # a second evaluation starts from zero
        for i, (logits, labels, medical, mask_input) in enumerate(batches):
            predictions = metrics.preprocess_logits_for_metrics(logits, (labels, medical, mask_input))
            result = metrics(EvalPrediction(predictions, (labels, medical, mask_input)),
                             compute_result=i == len(batches) - 1)
        scores = torch.cat([logits[labels != -100] for logits, labels, *_ in batches])
        references = torch.cat([labels[labels != -100] for _, labels, *_ in batches])
        flags = torch.cat([medical[labels != -100] for _, labels, medical, _ in batches])
        mask_flags = torch.cat([mask_input[labels != -100] for _, labels, _, mask_input in batches])
        expected = evaluate.load(MLM_TOPK_ACCURACY, top_k=[1, 2, 5]).compute(
            predictions=scores.numpy(), references=references.numpy(), medical_flags=flags.numpy(),
            mask_flags=mask_flags.numpy(),
        )
        expected["perplexity"] = math.exp(F.cross_entropy(scores, references).item())
        only = mask_flags.bool()
        expected["mask_only_perplexity"] = math.exp(F.cross_entropy(scores[only], references[only]).item())
        assert result == pytest.approx(expected, rel=1e-6)


def manual_evaluation(model, dataset, collator, batch_size: int, top_k) -> dict:
    """The same masked batches, evaluated by hand: full logits, then brute force on the logits directly."""
    scores, references, flags, is_mask = [], [], [], []
    for start in range(0, len(dataset), batch_size):
        examples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = collator(examples)
        medical = torch.zeros_like(batch["input_ids"])
        for row, example in enumerate(examples):
            medical[row, : len(example["term_flags"])] = torch.tensor(example["term_flags"]) > 0
        attention = packed_attention_inputs(model.config, batch["document_ids"])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **attention).logits
        masked = batch["labels"] != -100
        scores.append(logits[masked])
        references.append(batch["labels"][masked])
        flags.append(medical[masked].bool())
        is_mask.append(batch["input_ids"][masked] == collator.tokenizer.mask_token_id)
    scores, references, flags, is_mask = (torch.cat(x) for x in (scores, references, flags, is_mask))
    ranks = 1 + (scores > scores.gather(1, references[:, None])).sum(1)  # continuous logits: no ties
    result = {}
    for protocol, selected in (("", torch.ones_like(is_mask)), ("mask_only_", is_mask)):
        for group, members in (("", selected), ("medical_", selected & flags), ("other_", selected & ~flags)):
            result |= {f"{protocol}{group}top_{k}": float((ranks[members] <= k).float().mean()) for k in top_k}
            result[f"{protocol}{group}num_positions"] = int(members.sum())
        result[f"{protocol}perplexity"] = math.exp(F.cross_entropy(scores[selected], references[selected]).item())
    return result


def test_trainer_evaluation_equals_direct_computation_dense_and_sparse(tokenizer, files, model_dir, tmp_path):
    args = eval_args(files, per_device_eval_batch_size=3)
    lexicon = Lexicon.from_files([str(files / "lexicon.txt")], use_default=False)
    dataset = build_eval_dataset(data_args(files), args, tokenizer, lexicon)
    model = ModernBertForMaskedLM.from_pretrained(model_dir).eval()
    collator = MedicalMaskingCollator.for_evaluation(tokenizer, args.mlm_probability, args.seed)
    expected = manual_evaluation(model, dataset, collator, 3, args.top_k)
    assert expected["medical_num_positions"] > 20 and expected["other_num_positions"] > 20
    assert 0.7 < expected["mask_only_num_positions"] / expected["num_positions"] < 0.9
    for sparse in (False, True):
        model.config.sparse_prediction = model.sparse_prediction = sparse
        results, top_k = evaluate_masked_lm(model, tokenizer, dataset, collator, args, True, str(tmp_path))
        assert top_k == [1, 5, 25]
        assert {k: results[k] for k in expected} == pytest.approx(expected, rel=1e-5)
    collator = MedicalMaskingCollator.for_evaluation(tokenizer, args.mlm_probability, args.seed)
    results, _ = evaluate_masked_lm(model, tokenizer, dataset, collator, args, False, str(tmp_path))
    assert not any(key.startswith(("medical_", "other_")) for key in results)
    assert results["top_5"] == pytest.approx(expected["top_5"], rel=1e-5)


def test_figures_do_not_depend_on_the_batch_size(tokenizer, files, model_dir, tmp_path):
    lexicon = Lexicon.from_files([str(files / "lexicon.txt")], use_default=False)
    model = ModernBertForMaskedLM.from_pretrained(model_dir).eval()
    figures = []
    for batch_size in (1, 16):
        args = eval_args(files, per_device_eval_batch_size=batch_size)
        dataset = build_eval_dataset(data_args(files), args, tokenizer, lexicon)
        collator = MedicalMaskingCollator.for_evaluation(tokenizer, args.mlm_probability, args.seed)
        results, _ = evaluate_masked_lm(model, tokenizer, dataset, collator, args, True, str(tmp_path))
        figures.append(results)
    assert len(dataset) > 16 and figures[0]["mask_only_num_positions"] > 0
    counts = {key: value for key, value in figures[0].items() if key.endswith(("num_positions", "top_1", "top_5"))}
    assert counts == {key: figures[1][key] for key in counts}
    assert figures[0]["perplexity"] == pytest.approx(figures[1]["perplexity"], rel=1e-5)


def test_predictions_in_dataset_order_give_the_evaluation_figures(tokenizer, files, model_dir, tmp_path):
    """`predict_masked` returns each row's labels and top-k ids in the dataset's order, whatever the batch size."""
    args = eval_args(files, per_device_eval_batch_size=5)
    dataset = build_eval_dataset(data_args(files), args, tokenizer, None)
    model = ModernBertForMaskedLM.from_pretrained(model_dir).eval()
    collator = MedicalMaskingCollator.for_evaluation(tokenizer, args.mlm_probability, args.seed)
    expected, _ = evaluate_masked_lm(model, tokenizer, dataset, collator, args, False, str(tmp_path))
    predictions = predict_masked(model, tokenizer, dataset, collator, args, str(tmp_path), batch_size=7)
    assert predictions.top_ids.shape[:2] == predictions.labels.shape and predictions.top_ids.shape[2] == 25
    for row in (0, len(dataset) - 1):  # row i holds the labels the collator gives dataset row i alone
        alone = collator([dataset[row]])["labels"][0].numpy()
        assert (predictions.labels[row, : len(alone)] == alone).all()
        assert (predictions.labels[row, len(alone):] == -100).all()
    figures = predictions.figures(np.ones(predictions.labels.shape, dtype=bool), args.top_k)
    assert figures == {key: value for key, value in expected.items() if "top_" in key or "num_positions" in key}
    none = predictions.figures(np.zeros(predictions.labels.shape, dtype=bool), args.top_k)
    assert none == {"top_1": None, "top_5": None, "top_25": None, "num_positions": 0}


def load_recipe():
    return load_script("recipes/evaluate_mlm.py")


@pytest.mark.parametrize(
    ("source", "split", "error", "message"),
    [
        ({"data_files": "missing.jsonl"}, "all", FileNotFoundError, "no file matches"),
        ({"data_files": "empty.jsonl"}, "all", ValueError, "yields no documents"),
        ({"text_field": "body"}, "all", ValueError, r"has no column\(s\) \['body'\]"),
        ({}, "held_out", ValueError, "No evaluation text"),
    ],
)
def test_recipe_rejects_bad_evaluation_data(files, model_dir, source, split, error, message):
    if "data_files" in source:
        source = {"data_files": str(files / source["data_files"])}
    data = data_args(files, eval_fraction=0.0 if split == "held_out" else 0.01, **source)
    with pytest.raises(error, match=message):
        load_recipe().main(ModelArguments(model_name_or_path=str(model_dir)), data, eval_args(files, split=split))


def test_recipe_rejects_model_without_mlm_head(tokenizer, files, tmp_path):
    ModernBertModel(tiny_config(tokenizer, vocab_size=448)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="would newly initialise .*Is this a ModernBertForMaskedLM checkpoint"):
        load_recipe().main(ModelArguments(model_name_or_path=str(tmp_path)), data_args(files), eval_args(files))
    with pytest.raises(ValueError, match="needs --model_name_or_path"):
        load_recipe().main(ModelArguments(), data_args(files), eval_args(files))


def test_evaluation_arguments_reject_unknown_split():
    with pytest.raises(ValueError, match="split must be one of"):
        EvaluationArguments(split="test")


def run_recipe(files, model_dir, tmp_path, *launcher: str, batch_size: int = 8) -> tuple[dict, str]:
    """`recipes/evaluate_mlm.py` on the test documents; its results file and what it printed."""
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"sources:\n  - name: notes\n    path: json\n    data_files: {files / 'eval.jsonl'}\n"
        f"split: all\nmax_seq_length: 64\nlexicon_files: [{files / 'lexicon.txt'}]\nuse_default_lexicon: false\n"
    )
    output = tmp_path / f"results{len(launcher)}-{batch_size}.json"
    run = subprocess.run(
        [*(launcher or [sys.executable]), str(REPO_ROOT / "recipes" / "evaluate_mlm.py"), "--config", str(config),
         "--model_name_or_path", str(model_dir), "--output_json", str(output),
         "--per_device_eval_batch_size", str(batch_size)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(output.read_text()), run.stdout


@pytest.mark.slow
def test_recipe_prints_the_table_and_writes_the_json(files, model_dir, tmp_path):
    report, stdout = run_recipe(files, model_dir, tmp_path)
    metrics, top_k = report["metrics"], report["top_k"]
    assert top_k == [1, 5, 10, 25] and report["masking"]["mlm_probability"] == 0.15
    assert "answer is not in the input" in report["masking"]["mask_only_positions"]
    assert report["data"]["rows"] > 0
    assert "| counted positions | tokens | positions | Top-1 | Top-5 | Top-10 | Top-25 |" in stdout
    for protocol, label in (("", "all labelled ([MASK], random, kept)"), ("mask_only_", "[MASK] only")):
        assert metrics[f"{protocol}num_positions"] == (
            metrics[f"{protocol}medical_num_positions"] + metrics[f"{protocol}other_num_positions"])
        assert metrics[f"{protocol}perplexity"] > 1
        for group in ("all", "medical", "other"):
            prefix = protocol + ("" if group == "all" else f"{group}_")
            accuracies = [metrics[f"{prefix}top_{k}"] for k in top_k]
            assert accuracies == sorted(accuracies)
            cells = " | ".join(f"{100 * a:.2f}" for a in accuracies)
            assert f"| {label} | {group} | {metrics[f'{prefix}num_positions']} | {cells} |" in stdout
    assert metrics["mask_only_num_positions"] < metrics["num_positions"]
    assert (f"Perplexity: {metrics['perplexity']:.2f} (all labelled ([MASK], random, kept)), "
            f"{metrics['mask_only_perplexity']:.2f} ([MASK] only)") in stdout


@pytest.mark.slow
def test_two_processes_give_the_figures_of_one(files, model_dir, tmp_path):
    """Masks depend on the document only: 2 DDP processes (each a share of the rows) count what 1 process counts."""
    one, _ = run_recipe(files, model_dir, tmp_path, batch_size=1)
    two, _ = run_recipe(files, model_dir, tmp_path, *cpu_ddp_launcher(), batch_size=3)
    counts = {key: value for key, value in one["metrics"].items() if "num_positions" in key or "top_" in key}
    assert counts == {key: two["metrics"][key] for key in counts}
    assert one["metrics"]["perplexity"] == pytest.approx(two["metrics"]["perplexity"], rel=1e-5)
