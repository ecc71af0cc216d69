"""Top-k inside/outside mentions and whole-mention recovery, checked against plain forward passes on hand-masked
inputs; `recipes/evaluate_mlm.py --annotations` end to end."""

import json
import random
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, cpu_ddp_launcher, load_script, tiny_config
from test_model_card import sample_run_facts
from transformers import ModernBertForMaskedLM

from clinical_modernbert import entity_evaluation
from clinical_modernbert.artifacts import RUN_FACTS_FILE, MlmEvalReport
from clinical_modernbert.configs import DataArguments, EvaluationArguments, ModelArguments
from clinical_modernbert.data.annotations import AnnotatedDocument, Mention
from clinical_modernbert.entity_evaluation import entity_figures, entity_rows, format_entity_tables
from clinical_modernbert.masking import MedicalMaskingCollator
from clinical_modernbert.model_card import render_model_card
from clinical_modernbert.parsing import parse_recipe_args
from clinical_modernbert.tokenizer_training import train_bpe_tokenizer

CHEMICALS = ["metformin", "warfarin", "aspirin", "insulin", "heparin sodium"]
DISEASES = ["atrial fibrillation", "diabetes mellitus", "heart failure", "pneumonia"]
WORDS = "the patient was started on for and with a history of presented daily dose mg given after discharge".split()
TOP_K = [1, 5, 25]
MAX_LEN = 12  # short windows: documents span several rows, some mentions cross a border


def annotated_documents(n: int, seed: int = 0) -> list[AnnotatedDocument]:
    """Sentences with Chemical and Disease mentions; "heart failure" also holds an overlapping "failure" Finding."""
    rng, documents = random.Random(seed), []
    for i in range(n):
        text, mentions = "", []
        for _ in range(rng.randint(1, 4)):
            for word in [rng.choice(WORDS) for _ in range(rng.randint(2, 8))]:
                text += word + " "
            for kind, names in (("Chemical", CHEMICALS), ("Disease", DISEASES)):
                name = rng.choice(names)
                mentions.append(Mention(len(text), len(text) + len(name), kind))
                if name == "heart failure":
                    mentions.append(Mention(len(text) + 6, len(text) + len(name), "Finding"))
                text += name + (" for " if kind == "Chemical" else ". ")
        documents.append(AnnotatedDocument(str(i), text.strip(), mentions))
    return documents


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer([d.text for d in annotated_documents(300, seed=1)], vocab_size=400)


@pytest.fixture(scope="module")
def model(tokenizer):
    """A random tiny ModernBERT whose head favours a few words, graded, so that some predictions are right."""
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(tiny_config(tokenizer, vocab_size=448)).eval()
    favoured = tokenizer(" pneumonia warfarin for the heart", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        model.decoder.bias[favoured] += torch.linspace(3.0, 1.0, len(favoured))
    return model


def token_spans(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and character spans from decoded prefixes (not from the tokenizer's offsets), leading spaces left out."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = []
    for i in range(len(ids)):
        start, end = len(tokenizer.decode(ids[:i])), len(tokenizer.decode(ids[: i + 1]))
        while start < end and text[start] == " ":
            start += 1
        spans.append((start, end))
    assert tokenizer.decode(ids) == text
    return ids, spans


def ranks(model, input_ids: list[int], labels: dict[int, int]) -> dict[int, int]:
    """1-based rank of each label (position -> id) among the logits of one unpadded forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([input_ids])).logits[0]
    return {p: 1 + int((logits[p] > logits[p, label]).sum()) for p, label in labels.items()}


def accuracies(position_ranks: list[int]) -> dict:
    n = len(position_ranks)
    return {**{f"top_{k}": sum(r <= k for r in position_ranks) / n if n else None for k in TOP_K}, "num_positions": n}


def brute_force(model, tokenizer, documents) -> dict:
    """The section computed position by position: each window alone, masked by the collator or by hand."""
    collator = MedicalMaskingCollator.for_evaluation(tokenizer, 0.15, 42)
    body, kinds = MAX_LEN - 2, sorted({m.type for d in documents for m in d.mentions})
    fixed = {group: {"": [], "mask_only_": []} for group in ["inside", "outside", *kinds]}
    whole = {kind: {"ranks": [], "recovered": [], "cut": 0} for kind in kinds}
    for document in documents:
        ids, spans = token_spans(tokenizer, document.text)
        inside = [{m.type for m in document.mentions if s < e and s < m.end and e > m.start} for s, e in spans]
        for start in range(0, len(ids), body):
            window = [tokenizer.cls_token_id, *ids[start : start + body], tokenizer.sep_token_id]
            batch = collator([window])
            labels = {p: int(label) for p, label in enumerate(batch["labels"][0]) if label != -100}
            for p, rank in ranks(model, batch["input_ids"][0].tolist(), labels).items():
                is_mask = int(batch["input_ids"][0, p]) == tokenizer.mask_token_id
                types = inside[start + p - 1]
                for group in [*types, "inside" if types else "outside"]:
                    fixed[group][""].append(rank)
                    if is_mask:
                        fixed[group]["mask_only_"].append(rank)
        for mention in document.mentions:
            tokens = [i for i, (s, e) in enumerate(spans) if s < e and s < mention.end and e > mention.start]
            if tokens[0] // body != tokens[-1] // body:
                whole[mention.type]["cut"] += 1
                continue
            start = tokens[0] // body * body
            window = [tokenizer.cls_token_id, *ids[start : start + body], tokenizer.sep_token_id]
            masked = [tokenizer.mask_token_id if i - 1 + start in tokens else t for i, t in enumerate(window)]
            mention_ranks = ranks(model, masked, {t - start + 1: ids[t] for t in tokens}).values()
            whole[mention.type]["ranks"] += mention_ranks
            whole[mention.type]["recovered"].append(all(r == 1 for r in mention_ranks))

    def figures(group):  # as `MaskedPredictions.figures`: no [MASK]-only accuracy over no position
        if not group[""]:
            return accuracies([])
        only = accuracies(group["mask_only_"])
        return {**accuracies(group[""]), **{f"mask_only_{k}": v for k, v in only.items() if v is not None}}

    def recovery(parts):
        recovered = [r for part in parts for r in part["recovered"]]
        return {**accuracies([r for part in parts for r in part["ranks"]]), "mentions": len(recovered),
                "all_tokens_top_1": sum(recovered) / len(recovered) if recovered else None,
                "mentions_across_windows": sum(part["cut"] for part in parts)}

    return {
        "fixed_masking": {"inside": figures(fixed["inside"]), "outside": figures(fixed["outside"]),
                          "types": {kind: figures(fixed[kind]) for kind in kinds}},
        "whole_mention": {"all": recovery(whole.values()), "types": {k: recovery([whole[k]]) for k in kinds}},
    }


def flat(section: dict, prefix: str = "") -> dict:
    """Nested figures as one level of `a.b.c` keys (pytest.approx compares flat dictionaries)."""
    items = {}
    for key, value in section.items():
        items |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return items


def test_rows_mark_the_tokens_inside_each_type_of_mention(tokenizer):
    documents = annotated_documents(20)
    rows = entity_rows(documents, tokenizer, MAX_LEN)
    assert rows.types == ["Chemical", "Disease", "Finding"] and rows.documents == 20
    expected_rows, expected_inside, expected_cut = [], [], []
    for document in documents:
        ids, spans = token_spans(tokenizer, document.text)
        for m in document.mentions:
            tokens = [i for i, (s, e) in enumerate(spans) if s < e and s < m.end and e > m.start]
            expected_cut.append(tokens[0] // (MAX_LEN - 2) != tokens[-1] // (MAX_LEN - 2))
        for start in range(0, len(ids), MAX_LEN - 2):
            expected_rows.append([tokenizer.cls_token_id, *ids[start : start + MAX_LEN - 2], tokenizer.sep_token_id])
            expected_inside += [[False] * 3] + [
                [any(m.type == kind and s < e and s < m.end and e > m.start for m in document.mentions)
                 for kind in rows.types] for s, e in spans[start : start + MAX_LEN - 2]] + [[False] * 3]
    assert rows.dataset["input_ids"] == expected_rows
    assert rows.dataset["doc_lengths"] == [[len(row)] for row in expected_rows]
    assert rows.inside.tolist() == expected_inside
    assert len(expected_rows) > 40 and rows.inside[:, 2].any()
    assert (rows.mention_rows == -1).tolist() == expected_cut and sum(expected_cut) > 5
    assert len(rows.mention_types) == sum(len(d.mentions) for d in documents)


def test_tokens_are_inside_by_their_characters_without_the_leading_space(tokenizer):
    text = "given  aspirin"  # byte-level BPE: "Ġaspirin" (or its first piece) spans the space before it too
    rows = entity_rows([AnnotatedDocument("x", text, [Mention(7, 10, "Chemical")])], tokenizer, MAX_LEN)
    _, spans = token_spans(tokenizer, text)
    assert rows.inside[:, 0].nonzero()[0].tolist() == [i + 1 for i, (s, e) in enumerate(spans) if s < 10 and e > 7]
    with pytest.raises(ValueError, match="Document x: no token of the tokenizer covers the mention at characters 5-7"):
        entity_rows([AnnotatedDocument("x", text, [Mention(5, 7, "Blank")])], tokenizer, MAX_LEN)


@pytest.fixture(scope="module")
def section(model, tokenizer, tmp_path_factory):
    rows = entity_rows(annotated_documents(30), tokenizer, MAX_LEN)
    args = EvaluationArguments(top_k=TOP_K, per_device_eval_batch_size=5)
    return entity_figures(model, tokenizer, rows, args, TOP_K, str(tmp_path_factory.mktemp("out")))


def test_figures_equal_forward_passes_on_hand_masked_windows(section, model, tokenizer):
    expected = brute_force(model, tokenizer, annotated_documents(30))
    assert flat(section["fixed_masking"]) == pytest.approx(flat(expected["fixed_masking"]))
    assert flat(section["whole_mention"]) == pytest.approx(flat(expected["whole_mention"]))
    fixed, whole = section["fixed_masking"], section["whole_mention"]
    assert fixed["inside"]["num_positions"] > 30 and fixed["outside"]["num_positions"] > 30
    assert fixed["types"]["Finding"]["num_positions"] > 0
    assert whole["all"]["mentions_across_windows"] > 5 and whole["all"]["mentions"] > 100
    assert 0 < whole["types"]["Disease"]["all_tokens_top_1"] < 1 and 0 < fixed["types"]["Disease"]["top_1"] < 1
    assert whole["all"]["num_positions"] > whole["all"]["mentions"]
    assert section["mentions"] == {kind: whole["types"][kind]["mentions"] + whole["types"][kind][
        "mentions_across_windows"] for kind in ("Chemical", "Disease", "Finding")}


def test_slices_of_the_prediction_give_the_same_section(section, model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(entity_evaluation, "PREDICTION_TOKENS", 25 * MAX_LEN)  # 25 rows per predict_masked call
    rows = entity_rows(annotated_documents(30), tokenizer, MAX_LEN)
    args = EvaluationArguments(top_k=TOP_K, per_device_eval_batch_size=7)
    assert flat(entity_figures(model, tokenizer, rows, args, TOP_K, str(tmp_path))) == pytest.approx(flat(section))


def test_tables_show_every_group_and_type(section):
    tables = format_entity_tables(section, TOP_K)
    inside, chemical = section["fixed_masking"]["inside"], section["whole_mention"]["types"]["Chemical"]
    assert "| counted positions | tokens | positions | Top-1 | Top-5 | Top-25 |" in tables
    cells = " | ".join(f"{100 * inside[f'mask_only_top_{k}']:.2f}" for k in TOP_K)
    assert f"| [MASK] only | inside any mention | {inside['mask_only_num_positions']} | {cells} |" in tables
    assert "| all labelled ([MASK], random, kept) | inside Finding |" in tables
    cells = " | ".join(f"{100 * chemical[f'top_{k}']:.2f}" for k in TOP_K)
    assert (f"| Chemical | {chemical['mentions']} | {chemical['num_positions']} | {cells} | "
            f"{100 * chemical['all_tokens_top_1']:.2f} |") in tables
    assert "Not scored whole (tokens across a window border): " in tables


def pubtator(pmid: str, title: str, abstract: str, mentions: list[tuple[str, str]]) -> str:
    """A PubTator block; each (mention, type) at its next occurrence in title + " " + abstract."""
    text, lines, start = f"{title} {abstract}", [f"{pmid}|t|{title}", f"{pmid}|a|{abstract}"], 0
    for mention, kind in mentions:
        start = text.index(mention, start)
        lines.append(f"{pmid}\t{start}\t{start + len(mention)}\t{mention}\t{kind}\t-1\t")
        start += 1
    return "\n".join([*lines, f"{pmid}\tCID\tD014859\tD006470", ""])


PUBTATOR = pubtator(
    "100", "Warfarin-induced bleeding in atrial fibrillation.",
    "A patient on warfarin and aspirin developed bleeding; naïve heart failure was treated with heparin sodium.",
    [("Warfarin", "Chemical"), ("bleeding", "Disease"), ("atrial fibrillation", "Disease"), ("warfarin", "Chemical"),
     ("aspirin", "Chemical"), ("bleeding", "Disease"), ("heart failure", "Disease"), ("heparin sodium", "Chemical")],
) + "\n" + pubtator(
    "200", "Metformin for diabetes mellitus.", "Pneumonia after insulin.",
    [("Metformin", "Chemical"), ("diabetes mellitus", "Disease"), ("Pneumonia", "Disease"), ("insulin", "Chemical")],
)


RECIPE_ARGS = ["--max_seq_length", "16", "--per_device_eval_batch_size", "3"]


def load_recipe():
    return load_script("recipes/evaluate_mlm.py")


def run_recipe(tmp_path, model_dir, annotations, *launcher: str) -> dict:
    """`recipes/evaluate_mlm.py --annotations` in a subprocess (`launcher`: e.g. two DDP processes); its results."""
    output = tmp_path / f"results{len(launcher)}.json"
    run = subprocess.run(
        [*(launcher or [sys.executable]), str(REPO_ROOT / "recipes" / "evaluate_mlm.py"), "--model_name_or_path",
         str(model_dir), "--annotations", str(annotations), "--output_json", str(output), *RECIPE_ARGS],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(output.read_text())


@pytest.fixture(scope="module")
def recipe_inputs(tmp_path_factory, tokenizer, model):
    folder = tmp_path_factory.mktemp("recipe")
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "docs.PubTator.txt").write_text(PUBTATOR, encoding="utf-8")
    return folder / "model", folder / "docs.PubTator.txt"


def test_recipe_evaluates_an_annotation_file_without_sources(tmp_path, recipe_inputs, capsys):
    model_dir, annotations = recipe_inputs
    output = tmp_path / "results.json"
    args = ["--model_name_or_path", str(model_dir), "--annotations", str(annotations), "--output_json", str(output),
            *RECIPE_ARGS]
    load_recipe().main(*parse_recipe_args([ModelArguments, DataArguments, EvaluationArguments], args=args))
    stdout, report = capsys.readouterr().out, json.loads(output.read_text())
    assert report["data"]["split"] == "annotations" and report["data"]["documents"] == 2
    assert report["data"]["sources"] == {"annotations": {"path": str(annotations), "format": "pubtator",
                                                         "max_annotated_documents": None}}
    entities = report["entities"]
    assert entities["annotations"] == report["data"]["sources"]["annotations"]
    assert entities["mentions"] == {"Chemical": 6, "Disease": 6}
    assert entities["rows"] == report["data"]["rows"] > 2  # windows of 16 tokens: the first abstract is cut
    whole = entities["whole_mention"]["all"]
    assert whole["mentions"] + whole["mentions_across_windows"] == 12 and whole["mentions_across_windows"] > 0
    assert report["metrics"]["num_positions"] == (entities["fixed_masking"]["inside"]["num_positions"]
                                                  + entities["fixed_masking"]["outside"]["num_positions"])
    assert "| counted positions | tokens | positions |" in stdout and "| inside Chemical |" in stdout
    assert "| mentions masked whole | mentions | tokens |" in stdout
    assert not any(word in output.read_text() for word in ("arfarin", "bleeding", "naïve", "heparin"))
    assert MlmEvalReport.read(output).entities == entities


def test_recipe_reads_iob_files_and_keeps_the_first_documents_asked_for(tmp_path, recipe_inputs):
    model_dir, _ = recipe_inputs
    annotations, output = tmp_path / "test.tsv", tmp_path / "results.json"
    annotations.write_text("aspirin\tB-Chemical\nfor\tO\nheart\tB-Disease\nfailure\tI-Disease\n\n"
                           "warfarin\tB-Chemical\n.\tO\n", encoding="utf-8")
    args = ["--model_name_or_path", str(model_dir), "--annotations", str(annotations), "--output_json", str(output),
            "--max_annotated_documents", "1", *RECIPE_ARGS]
    load_recipe().main(*parse_recipe_args([ModelArguments, DataArguments, EvaluationArguments], args=args))
    report = json.loads(output.read_text())
    assert report["data"]["sources"]["annotations"]["format"] == "iob"
    assert report["data"]["documents"] == 1 and report["data"]["sources"]["annotations"]["max_annotated_documents"] == 1
    assert report["entities"]["mentions"] == {"Chemical": 1, "Disease": 1}
    assert report["entities"]["whole_mention"]["types"]["Disease"]["mentions"] == 1


def test_with_sources_the_headline_stays_on_them_and_the_card_shows_both(tmp_path, recipe_inputs, capsys):
    """One command gives the card all of its evaluation: the sources' tables, then the annotated documents'."""
    model_dir, annotations = recipe_inputs
    notes, output = tmp_path / "notes.jsonl", tmp_path / "model" / "mlm_eval_results.json"
    shutil.copytree(model_dir, output.parent)
    (output.parent / RUN_FACTS_FILE).write_text(json.dumps(sample_run_facts()))
    notes.write_text("".join(json.dumps({"text": t}) + "\n" for t in PUBTATOR.split("\n") if "|" in t))
    config = tmp_path / "eval.yaml"
    config.write_text(f"sources:\n  - name: notes\n    path: json\n    data_files: {notes}\nsplit: all\n")
    args = ["--config", str(config), "--model_name_or_path", str(output.parent), "--annotations", str(annotations),
            *RECIPE_ARGS]
    load_recipe().main(*parse_recipe_args([ModelArguments, DataArguments, EvaluationArguments], args=args))
    report = json.loads(output.read_text())
    assert report["data"]["split"] == "all" and list(report["data"]["sources"]) == ["notes"]
    assert report["entities"]["mentions"] == {"Chemical": 6, "Disease": 6}
    text = " ".join(render_model_card(output.parent, "org/model").card.text.split())
    assert "Masked-token prediction on **notes (all documents)**" in text
    assert f"**Medical entities** (the same file): 2 annotated documents of `{annotations.name}` (pubtator)" in text
    whole = report["entities"]["whole_mention"]["all"]
    assert f"| all types | {whole['mentions']} | {whole['num_positions']} |" in text


def test_nothing_to_evaluate_or_a_probe_without_sources_is_refused(recipe_inputs):
    model_dir, annotations = recipe_inputs
    with pytest.raises(ValueError, match="Nothing to evaluate: give `sources` in a --config YAML, or --annotations"):
        load_recipe().main(ModelArguments(model_name_or_path=str(model_dir)), DataArguments(), EvaluationArguments())
    with pytest.raises(ValueError, match="--context_lengths probes long documents of `sources`"):
        load_recipe().main(ModelArguments(model_name_or_path=str(model_dir)), DataArguments(),
                           EvaluationArguments(annotations=str(annotations), context_lengths=[256, 512]))


@pytest.mark.slow
def test_two_processes_give_the_section_of_one(tmp_path, recipe_inputs):
    model_dir, annotations = recipe_inputs
    one = run_recipe(tmp_path, model_dir, annotations)
    two = run_recipe(tmp_path, model_dir, annotations, *cpu_ddp_launcher())
    assert flat(two["entities"]) == pytest.approx(flat(one["entities"]))
    figures = [key for key in one["metrics"] if "top_" in key or "num_positions" in key or "perplexity" in key]
    assert {k: two["metrics"][k] for k in figures} == pytest.approx({k: one["metrics"][k] for k in figures})


def test_recipe_names_a_bad_annotation_file(tmp_path, recipe_inputs):
    model_dir, _ = recipe_inputs
    bad = tmp_path / "bad.txt"
    bad.write_text("1|t|ab\n1|a|cd\n1\t0\t2\tax\tDisease\t-1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{bad}:3: mention 'ax' at 0-2 differs from the text there, 'ab'"):
        load_recipe().main(ModelArguments(model_name_or_path=str(model_dir)), DataArguments(),
                           EvaluationArguments(annotations=str(bad)))
