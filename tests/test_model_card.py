"""The generated model card: Hub metadata, each section's figures read from the run's files, the plot, bad input.

`write_model_dir` (a saved tiny ModernBERT laid out as `recipes/pretrain.py` leaves it) is shared with test_hub.py and
test_space.py.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, tiny_config
from huggingface_hub import ModelCard
from transformers import AutoConfig, AutoTokenizer, ModernBertForMaskedLM

from clinical_modernbert.artifacts import (
    HELD_OUT_EVAL_FILE,
    LONG_CONTEXT_PLOT_FILE,
    MLM_EVAL_FILE,
    RUN_FACTS_FILE,
    TRAINING_CURVES_FILE,
    VOCABULARY_REPORT_FILE,
)
from clinical_modernbert.artifacts.run_facts import MEASURED_KEYS
from clinical_modernbert.assets import EMBEDDED_TOKENIZER_DIR
from clinical_modernbert.hub import plan_model_upload
from clinical_modernbert.model_card import (
    card_template,
    read_run,
    render_model_card,
)

REPO_ID = "test-org/clinical-modernbert-test"
FAVOURED_IDS = list(range(1000, 1005))  # word pieces the decoder bias ranks far ahead of every other token


def write_model_dir(path: Path, facts: dict | None = None) -> Path:
    """A saved tiny ModernBERT (weights, config, tokenizer) plus `run_facts.json`.

    Its decoder bias puts five tokens far ahead of the rest, so fill-mask rankings do not hinge on rounding.
    """
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR)
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(tiny_config(tokenizer))
    with torch.no_grad():
        model.decoder.bias[FAVOURED_IDS] = torch.tensor([12.0, 10.0, 8.0, 6.0, 4.0])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / RUN_FACTS_FILE).write_text(json.dumps(facts or sample_run_facts()))
    return path


def sample_run_facts(**overrides) -> dict:
    """`run_facts.json` with every documented key and values unlike any default."""
    log = [
        {"loss": 9.0 - 0.5 * s, "learning_rate": 7e-4, "mlm_probability": 0.3 - 0.03 * s,
         "masked_fraction": 0.31 - 0.03 * s, "medical_share_masked": 0.35, "step": s}
        for s in range(1, 6)
    ] + [{"eval_loss": 6.5, "step": 5}]
    facts = {
        "base_model": "answerdotai/ModernBERT-base",
        "from_scratch_config": None,
        "steps": 5,
        "global_batch_size": 24,
        "max_seq_length": 128,
        "packing": True,
        "attn_implementation": "sdpa",
        "precision": "bf16",
        "learning_rate": 0.0007,
        "source_weights": {"pubmed": 3.0, "notes": 1.0},
        "source_paths": {"pubmed": "my-org/pubmed", "notes": "json"},
        "masking": {"schedule": "cosine", "mlm_probability_start": 0.3, "mlm_probability_end": 0.15,
                    "eval_mlm_probability": 0.15, "medical_weight": 2.5, "whole_term_masking": True,
                    "lexicon_terms": 8765},
        "tokens_trained": 123457,
        "sources": {
            "pubmed": {"documents": 301, "tokens": 90001, "skipped_empty": 0, "skipped_non_string": 0,
                       "utf8_replaced": 0},
            "notes": {"documents": 77, "tokens": 30011, "skipped_empty": 2, "skipped_non_string": 0,
                      "utf8_replaced": 1},
        },
        "masking_counts": {"maskable": 120000, "medical_maskable": 30000, "masked": 26000, "medical_masked": 9100},
        "log_history": log,
    }
    return {**facts, **overrides}


def sample_mlm_eval() -> dict:
    """A result file as `recipes/evaluate_mlm.py` writes it."""
    return {
        "model": "outputs/x",
        "data": {"split": "held_out", "sources": {"notes": {"path": "json", "data_files": "n.jsonl", "split": "train"}},
                 "eval_fraction": 0.01, "max_seq_length": 128, "rows": 41, "tokens": 5099},
        "masking": {"mlm_probability": 0.15, "seed": 42, "counted_positions": "every labelled position",
                    "mask_only_positions": "[MASK] positions only"},
        "top_k": [1, 5, 10, 25],
        "metrics": {
            "top_1": 0.2113, "top_5": 0.3407, "top_10": 0.4051, "top_25": 0.4966, "num_positions": 751,
            "medical_top_1": 0.1121, "medical_top_5": 0.2252, "medical_top_10": 0.3003, "medical_top_25": 0.4104,
            "medical_num_positions": 333,
            "other_top_1": 0.2907, "other_top_5": 0.4330, "other_top_10": 0.4889, "other_top_25": 0.5653,
            "other_num_positions": 418,
            "perplexity": 87.654,
            "mask_only_top_1": 0.1012, "mask_only_top_5": 0.2213, "mask_only_top_10": 0.3011,
            "mask_only_top_25": 0.4212,
            "mask_only_num_positions": 601,
            "mask_only_medical_top_1": 0.0512, "mask_only_medical_top_5": 0.1713, "mask_only_medical_top_10": 0.2511,
            "mask_only_medical_top_25": 0.3712, "mask_only_medical_num_positions": 266,
            "mask_only_other_top_1": 0.1412, "mask_only_other_top_5": 0.2613, "mask_only_other_top_10": 0.3411,
            "mask_only_other_top_25": 0.4612, "mask_only_other_num_positions": 335,
            "mask_only_perplexity": 123.456,
        },
    }


def sample_vocabulary_report() -> dict:
    return {"mode": "extend", "tokens_added": 347, "vocab_size": {"before": 4096, "after": 4443},
            "fertility": {"heldout_text": {"before": 1.456, "after": 1.321}, "drugs": {"before": 3.1, "after": 1.9}},
            "single_token_share": {"drugs": {"before": 0.12, "after": 0.58}},
            "mining": {"documents": 900, "min_document_frequency": 20, "sources_mined": ["pubmed"],
                       "sources_excluded": ["mimic_iv_notes"]}}


def sample_finetune_result() -> dict:
    return {"task": "bc5cdr", "task_type": "ner", "split": "test", "num_examples": 4797, "checkpoint": "outputs/x",
            "seeds": [1, 2, 3], "metrics": {"f1": {"mean": 0.8123, "std": 0.0042}}}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("saved"))


@pytest.fixture
def model_dir(saved_model, tmp_path) -> Path:
    return Path(shutil.copytree(saved_model, tmp_path / "model"))


def write(path: Path, data) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def test_metadata_is_what_the_hub_expects(model_dir):
    report = sample_mlm_eval()
    write(model_dir / MLM_EVAL_FILE, report)
    card = ModelCard(str(render_model_card(model_dir, REPO_ID, license="mit").card))  # parsed back as the Hub would
    data = card.data
    assert (data.pipeline_tag, data.license, data.language, data.library_name) == ("fill-mask", "mit", "en",
                                                                                   "transformers")
    assert data.base_model == "answerdotai/ModernBERT-base"
    assert data.datasets == ["my-org/pubmed"]  # the `json` builder of local files is no Hub dataset
    assert data.model_name == REPO_ID.split("/")[1]
    values = {r.metric_type: r.metric_value for r in data.eval_results}
    assert values == {**{f"top_{k}_accuracy": report["metrics"][f"top_{k}"] for k in report["top_k"]},
                      "perplexity": report["metrics"]["perplexity"]}
    assert {r.dataset_name for r in data.eval_results} == {"notes (held-out documents)"}


def test_local_base_model_stays_out_of_metadata_and_lends_its_vocabulary_report(model_dir, tmp_path):
    base = tmp_path / "extended-tokenizer-checkpoint"
    base.mkdir()
    write(base / VOCABULARY_REPORT_FILE, sample_vocabulary_report())
    write(model_dir / RUN_FACTS_FILE, sample_run_facts(base_model=str(base)))
    card = render_model_card(model_dir, REPO_ID).card
    assert card.data.base_model is None
    assert "347 tokens were added to the tokenizer (4,096 → 4,443 tokens)" in card.text


def test_sections_report_the_runs_own_figures(model_dir):
    facts = sample_run_facts()
    write(model_dir / HELD_OUT_EVAL_FILE, {"eval_loss": 5.4321})
    text = render_model_card(model_dir, REPO_ID).card.text
    config = AutoConfig.from_pretrained(model_dir)
    parameters = ModernBertForMaskedLM.from_pretrained(model_dir).num_parameters()
    expected = [
        f"| Parameters (stored weights) | {parameters:,} |",
        f"{config.max_position_embeddings:,} tokens (position range of the architecture); trained on rows of 128",
        (f"{config.layer_types.count('full_attention')} global layers, "
         f"{config.layer_types.count('sliding_attention')} sliding-window layers of {config.local_attention} tokens"),
        f"| Embedding rows (vocabulary, padded) | {config.vocab_size:,} |",
        "| Tokens trained (non-padding, counted during training) | 123,457 |",
        "| Optimizer steps | 5 |",
        "| Global batch | 24 rows of 128 tokens, documents packed",
        f"| Mean tokens per step | {123457 / 5:,.0f} |",
        "| Held-out MLM loss at the end of training (15.0% masking) | 5.4321 |",
        f"| pubmed | `my-org/pubmed` | 75.0% | 301 | {pct(301 / 378)} | 90,001 | {pct(90001 / 120012)} |",
        f"| notes | `json` | 25.0% | 77 | {pct(77 / 378)} | 30,011 | {pct(30011 / 120012)} |",
        "| Masking-rate schedule | cosine, 30.0% → 15.0% of maskable tokens |",
        "| Medical-token weight | 2.5 ×",
        "| Medical lexicon | 8,765 terms",
        f"| Realised masking rate over the run | {pct(26000 / 120000)} of maskable tokens |",
        f"| Medical share of maskable tokens / of masked tokens | {pct(30000 / 120000)} / {pct(9100 / 26000)} |",
        "![Training loss and masking rate over the training steps](training_curves.png)",
        f'pipeline("fill-mask", model="{REPO_ID}")',
        "The patient was started on [MASK] for atrial fibrillation.",
        "protected health information (PHI)",
    ]
    for line in expected:
        assert line in text, line
    assert facts["base_model"] in text


def test_a_run_in_phases_lists_them(model_dir):
    phases = [{"name": "short", "steps": 3, "max_seq_length": 128, "global_batch_size": 24, "tokens_trained": 9000},
              {"name": "long", "steps": 2, "max_seq_length": 1024, "global_batch_size": 24, "tokens_trained": 48000}]
    assert "Trained in phases" not in render_model_card(model_dir, REPO_ID).card.text  # one phase: nothing to add
    write(model_dir / RUN_FACTS_FILE, sample_run_facts(phases=phases))
    text = render_model_card(model_dir, REPO_ID).card.text
    assert "Trained in phases, each warm-starting from the one before" in text
    assert "| short | 3 | 24 rows of 128 tokens | 9,000 |" in text
    assert "| long | 2 | 24 rows of 1,024 tokens | 48,000 |" in text


def test_absent_results_are_reported_as_not_measured(model_dir):
    card = render_model_card(model_dir, REPO_ID).card
    assert card.data.eval_results is None and "model-index" not in card.content
    assert f"Masked-token prediction: not measured (no `{MLM_EVAL_FILE}`" in card.text
    write(model_dir / HELD_OUT_EVAL_FILE, {"eval_loss": 5.4321})  # the run's loss but no top-k: still not measured
    assert "Masked-token prediction: not measured" in render_model_card(model_dir, REPO_ID).card.text
    assert "Downstream tasks: not measured" in card.text
    assert f"Not measured: no `{VOCABULARY_REPORT_FILE}`" in card.text
    assert "| Held-out MLM loss at the end of training (15.0% masking) | not measured |" in card.text


def test_evaluation_vocabulary_and_downstream_sections(model_dir):
    report, vocabulary, finetune = sample_mlm_eval(), sample_vocabulary_report(), sample_finetune_result()
    write(model_dir / MLM_EVAL_FILE, report)
    write(model_dir / VOCABULARY_REPORT_FILE, vocabulary)
    write(model_dir / "finetune_results_bc5cdr.json", finetune)
    text = render_model_card(model_dir, REPO_ID).card.text
    assert "Masked-token prediction on **notes (held-out documents)**: 41 rows, 5,099 tokens" in text
    assert f"measured by `recipes/evaluate_mlm.py` (`{MLM_EVAL_FILE}`)" in text
    assert "**All labelled positions** (every labelled position); perplexity 87.65:" in text
    assert "**[MASK] positions only** ([MASK] positions only); perplexity 123.46:" in text
    assert_top_k_tables(text, report)
    assert "| heldout text | 1.456 | 1.321 |" in text
    assert "| drugs | 12.0% | 58.0% |" in text
    assert ("Only words found in at least 20 distinct documents were mined (from pubmed); not mined, as not "
            "redistributable: mimic_iv_notes.") in " ".join(text.split())
    assert "| bc5cdr | test | 4,797 | 3 | `outputs/x` | f1 | 0.8123 ± 0.0042 |" in text


def assert_top_k_tables(text: str, report: dict) -> None:
    """The card shows both tables (all labelled positions, then [MASK] only) with every figure of the report."""
    metrics = report["metrics"]
    tables = text.split("**[MASK] positions only**")
    assert len(tables) == 2
    for table, protocol in zip(tables, ("", "mask_only_")):
        counts = " | ".join(f"{metrics[f'{protocol}{p}num_positions']:,}" for p in ("", "medical_", "other_"))
        assert f"| Counted positions | {counts} |" in table
        for k in report["top_k"]:
            row = " | ".join(pct(metrics[f"{protocol}{p}top_{k}"]) for p in ("", "medical_", "other_"))
            assert f"| Top-{k} | {row} |" in table


def sample_long_context() -> dict:
    """The long-context probe's section, as `recipes/evaluate_mlm.py --context_lengths` writes it."""
    accuracies = {"512": (0.1011, 0.2022, 0.3033, 0.4044), "1024": (0.1516, 0.2527, 0.3538, 0.4549)}
    return {"context_lengths": [512, 1024], "dropped_lengths": [2048, 8192], "documents": 17, "probe_tokens": 128,
            "positions": 321,
            "top_k": {n: {f"top_{k}": a for k, a in zip((1, 5, 10, 25), values)} for n, values in accuracies.items()}}


def test_long_context_table_and_plot_on_the_card_and_in_the_push(model_dir):
    report = {**sample_mlm_eval(), "long_context": sample_long_context()}
    write(model_dir / MLM_EVAL_FILE, report)
    rendered = render_model_card(model_dir, REPO_ID)
    text = " ".join(rendered.card.text.split())
    assert ("**Long context** (the same file): 321 tokens near the end of 17 documents of notes (held-out documents) "
            "that are at least 1,024 tokens long") in text
    assert "each document's last 128 tokens" in text
    assert "| Context length | Top-1 | Top-5 | Top-10 | Top-25 |" in text
    assert "| 512 | 10.1% | 20.2% | 30.3% | 40.4% |" in text and "| 1,024 | 15.2% | 25.3% | 35.4% | 45.5% |" in text
    assert "Context lengths 2048, 8192: not measured (no evaluated document is that long)." in text
    assert f"]({LONG_CONTEXT_PLOT_FILE})" in text
    plan = plan_model_upload(model_dir, REPO_ID)
    assert plan.files[LONG_CONTEXT_PLOT_FILE] == rendered.images[LONG_CONTEXT_PLOT_FILE]
    assert plan.files[LONG_CONTEXT_PLOT_FILE].startswith(b"\x89PNG")
    write(model_dir / MLM_EVAL_FILE, sample_mlm_eval())
    rendered = render_model_card(model_dir, REPO_ID)
    assert "Long context" not in rendered.card.text and LONG_CONTEXT_PLOT_FILE not in rendered.images


def figures(top: tuple, positions: int, mask_only: tuple | None = None, mask_positions: int = 0) -> dict:
    result = {**{f"top_{k}": a for k, a in zip((1, 5, 10, 25), top)}, "num_positions": positions}
    if mask_only:
        result |= {**{f"mask_only_top_{k}": a for k, a in zip((1, 5, 10, 25), mask_only)},
                   "mask_only_num_positions": mask_positions}
    return result


def sample_entities() -> dict:
    """The annotated evaluation's section, as `recipes/evaluate_mlm.py --annotations` writes it."""
    whole = {"mentions": 40, "all_tokens_top_1": 0.125, "mentions_across_windows": 0}
    return {
        "annotations": {"path": "/home/someone/corpora/CDR_TestSet.PubTator.txt", "format": "pubtator"},
        "documents": 12, "rows": 12, "tokens": 3456, "mentions": {"Chemical": 25, "Disease": 15},
        "fixed_masking": {
            "inside": figures((0.11, 0.22, 0.33, 0.44), 70, (0.05, 0.15, 0.25, 0.35), 55),
            "outside": figures((0.31, 0.42, 0.53, 0.64), 400, (0.21, 0.32, 0.43, 0.54), 320),
            "types": {"Chemical": figures((0.12, 0.23, 0.34, 0.45), 41, (0.06, 0.16, 0.26, 0.36), 33),
                      "Disease": figures((0.1, 0.2, 0.3, 0.4), 29, (0.04, 0.14, 0.24, 0.34), 22)},
        },
        "whole_mention": {
            "all": {**figures((0.08, 0.18, 0.28, 0.38), 90), **whole},
            "types": {"Chemical": {**figures((0.09, 0.19, 0.29, 0.39), 55), **whole, "mentions": 25,
                                   "all_tokens_top_1": 0.16},
                      "Disease": {**figures((0.07, 0.17, 0.27, 0.37), 35), **whole, "mentions": 15,
                                  "all_tokens_top_1": 0.0667}},
        },
    }


def test_entity_and_whole_mention_tables_on_the_card(model_dir):
    write(model_dir / MLM_EVAL_FILE, {**sample_mlm_eval(), "entities": sample_entities()})
    text = " ".join(render_model_card(model_dir, REPO_ID).card.text.split())
    assert ("**Medical entities** (the same file): 12 annotated documents of `CDR_TestSet.PubTator.txt` (pubtator), "
            "3,456 tokens, with 25 Chemical, 15 Disease mentions.") in text
    assert "/home/someone" not in text
    assert "| Counted positions | Tokens | Positions | Top-1 | Top-5 | Top-10 | Top-25 |" in text
    assert "| All labelled | inside any mention | 70 | 11.0% | 22.0% | 33.0% | 44.0% |" in text
    assert "| All labelled | outside every mention | 400 | 31.0% | 42.0% | 53.0% | 64.0% |" in text
    assert "| All labelled | inside Disease mentions | 29 | 10.0% | 20.0% | 30.0% | 40.0% |" in text
    assert "| [MASK] only | inside Chemical mentions | 33 | 6.0% | 16.0% | 26.0% | 36.0% |" in text
    assert "| Entity type | Mentions | Tokens | Top-1 | Top-5 | Top-10 | Top-25 | Every token ranked first |" in text
    assert "| all types | 40 | 90 | 8.0% | 18.0% | 28.0% | 38.0% | 12.5% |" in text
    assert "| Disease | 15 | 35 | 7.0% | 17.0% | 27.0% | 37.0% | 6.7% |" in text
    assert "not scored whole" not in text


def test_an_evaluation_file_without_mask_only_figures_shows_one_table(model_dir):
    report = sample_mlm_eval()
    report["metrics"] = {key: value for key, value in report["metrics"].items() if not key.startswith("mask_only_")}
    write(model_dir / MLM_EVAL_FILE, report)
    text = render_model_card(model_dir, REPO_ID).card.text
    assert "**All labelled positions**" in text and "**[MASK] positions only**" not in text


def test_without_an_evaluation_file_the_card_shows_the_runs_own_held_out_figures(model_dir):
    report = sample_mlm_eval()
    write(model_dir / RUN_FACTS_FILE, sample_run_facts(
        masking={**sample_run_facts()["masking"], "eval_seed": 7},
        held_out={"documents": 12, "rows": 5, "tokens": 601}))
    write(model_dir / HELD_OUT_EVAL_FILE, {"eval_loss": 5.4321, "eval_runtime": 1.5, "epoch": 0.1,
                                           **{f"eval_{key}": value for key, value in report["metrics"].items()}})
    card = render_model_card(model_dir, REPO_ID).card
    text = card.text
    assert ("Masked-token prediction on **pubmed, notes (held-out documents)**: 12 documents in 5 rows, 601 tokens,\n"
            "15.0% of tokens masked (seed 7),\nmeasured by the training run itself") in text
    assert f"(`{HELD_OUT_EVAL_FILE}`; no `{MLM_EVAL_FILE}`" in text
    assert_top_k_tables(text, report)
    top_k = [report["metrics"][f"top_{k}"] for k in (1, 5, 10, 25)]
    assert [r.metric_value for r in card.data.eval_results][:4] == top_k
    assert "The evaluation above covers pubmed, notes (held-out documents) only" in text
    write(model_dir / MLM_EVAL_FILE, report)  # a separate evaluation takes precedence
    assert "measured by `recipes/evaluate_mlm.py`" in render_model_card(model_dir, REPO_ID).card.text


def test_template_holds_no_typed_figures():
    """Outside Jinja expressions, code examples and the citation, the template has no digit at all."""
    template = card_template()
    static = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", "", template, flags=re.DOTALL)
    static = re.sub(r"```.*?```", "", static, flags=re.DOTALL)
    assert re.findall(r".*\d.*", static) == []


SHORT_RUN_LOG = [{"train_runtime": 3.2, "train_samples_per_second": 5.0, "train_steps_per_second": 0.6,
                  "total_flos": 1234.0, "train_loss": 8.1, "epoch": 0.5, "step": 2}]


def test_run_shorter_than_its_logging_interval_renders_without_a_plot(model_dir):
    write(model_dir / RUN_FACTS_FILE, sample_run_facts(steps=2, log_history=SHORT_RUN_LOG))
    rendered = render_model_card(model_dir, REPO_ID)
    assert rendered.images == {}
    assert "Training curves: not measured (no loss was logged" in rendered.card.text
    assert TRAINING_CURVES_FILE not in rendered.card.text
    plan = plan_model_upload(model_dir, REPO_ID)
    assert TRAINING_CURVES_FILE not in plan.files and plan.readme == str(rendered.card)


@pytest.mark.parametrize("absent", ["missing", "null"])
def test_measurements_the_run_lacks_read_not_measured(model_dir, absent):
    facts = sample_run_facts()
    for key in MEASURED_KEYS:
        if absent == "missing":
            del facts[key]
        else:
            facts[key] = None
    write(model_dir / RUN_FACTS_FILE, facts)
    text = render_model_card(model_dir, REPO_ID).card.text
    for line in [
        "| Tokens trained (non-padding, counted during training) | not measured |",
        "| Optimizer steps | not measured |",
        "| Mean tokens per step | not measured |",
        "| pubmed | `my-org/pubmed` | 75.0% | not measured | not measured | not measured | not measured |",
        "| notes | `json` | 25.0% | not measured | not measured | not measured | not measured |",
        "| Realised masking rate over the run | not measured |",
        "| Medical share of maskable tokens / of masked tokens | not measured / not measured |",
        "Training curves: not measured",
    ]:
        assert line in text, line


def test_zero_steps_and_an_unread_source(model_dir):
    facts = sample_run_facts(steps=0, tokens_trained=0, masking_counts={}, log_history=[])
    del facts["sources"]["notes"]
    write(model_dir / RUN_FACTS_FILE, facts)
    text = render_model_card(model_dir, REPO_ID).card.text
    assert "| Optimizer steps | 0 |" in text and "| Mean tokens per step | not measured |" in text
    assert "| pubmed | `my-org/pubmed` | 75.0% | 301 | 100.0% | 90,001 | 100.0% |" in text
    assert "| notes | `json` | 25.0% | not measured | not measured | not measured | not measured |" in text
    assert "| Realised masking rate over the run | not measured |" in text


def corrupt(report: dict, path: str, value) -> dict:
    *parents, key = path.split(".")
    target = report
    for parent in parents:
        target = target[parent]
    if value is KeyError:
        del target[key]
    else:
        target[key] = value
    return report


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("metrics", KeyError, "missing key 'metrics'"),
        ("top_k", [5, 1], "'top_k' must be a non-empty increasing list"),
        ("metrics.top_5", 1.5, r"metrics.top_5 must be a number in \[0, 1\], got 1.5"),
        ("metrics.top_10", 0.1, r"top_k accuracies must not decrease as k grows"),
        ("metrics.medical_top_25", KeyError, r"metrics.medical_top_25 must be a number"),
        ("metrics.num_positions", 0, "'num_positions' must be a positive integer"),
        ("metrics.perplexity", "low", "'perplexity' must be a number >= 1"),
        ("masking.mlm_probability", 15, r"'mlm_probability' must be a number in \(0, 1\)"),
        ("data.sources", {}, "data.sources must name the evaluated sources"),
        ("metrics.mask_only_top_5", 0.01, r"metrics.mask_only_top_k accuracies must not decrease"),
        ("metrics.mask_only_medical_top_1", None, r"metrics.mask_only_medical_top_1 must be a number"),
        ("long_context", [1], "long_context.must be an object"),
        ("entities.annotations", {"format": "iob"}, "entities.'annotations' must be an object naming"),
        ("entities.mentions", {}, "entities.'mentions' must be a non-empty object"),
        ("entities.fixed_masking.types.Disease", KeyError, "entities.fixed_masking.types must hold the figures of"),
        ("entities.whole_mention.types.Chemical.all_tokens_top_1", 1.5,
         r"entities.whole_mention.types.Chemical.'all_tokens_top_1' must be a share in \[0, 1\]"),
        ("entities.fixed_masking.inside.mask_only_top_5", 0.01, "entities.fixed_masking.inside.mask_only_top_k acc"),
        ("entities.whole_mention.all.top_25", "x", r"entities.whole_mention.all.top_25 must be a number"),
        ("long_context.context_lengths", [1024, 512], "long_context.'context_lengths' must be a non-empty increasing"),
        ("long_context.positions", 0, "long_context.'positions' must be a positive integer"),
        ("long_context.top_k.512", KeyError, "long_context.top_k must hold the figures of exactly the context"),
        ("long_context.top_k.1024.top_25", KeyError, r"long_context.top_k.1024.top_25 must be a number in \[0, 1\]"),
        ("long_context.top_k.512.top_10", 0.9, "long_context.top_k.512.top_k accuracies must not decrease"),
    ],
)
def test_malformed_evaluation_file_is_refused(model_dir, path, value, message):
    report = {**sample_mlm_eval(), "long_context": sample_long_context(), "entities": sample_entities()}
    write(model_dir / MLM_EVAL_FILE, corrupt(report, path, value))
    with pytest.raises(ValueError, match=message) as err:
        render_model_card(model_dir, REPO_ID)
    assert f"Malformed {model_dir / MLM_EVAL_FILE}" in str(err.value)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        (MLM_EVAL_FILE, "{not json", "not valid JSON"),
        (MLM_EVAL_FILE, "[1, 2]", "expected a JSON object, got list"),
        (VOCABULARY_REPORT_FILE, {"tokens_added": -1, "fertility": {"a": {"after": 1.2}}}, "'tokens_added' must be"),
        (VOCABULARY_REPORT_FILE, {"tokens_added": 3, "fertility": {"a": {"before": 1.2}}}, r"fertility.a must hold"),
        (VOCABULARY_REPORT_FILE, {**sample_vocabulary_report(), "mining": {"min_document_frequency": 0}},
         "'min_document_frequency' must be a positive integer"),
        (VOCABULARY_REPORT_FILE, {**sample_vocabulary_report(), "mining": {"sources_excluded": "mimic"}},
         "'sources_excluded' must be a list of source names"),
        ("finetune_results_ner.json", {"task": "ner", "split": "test", "checkpoint": "x", "metrics": {"f1": 0.8}},
         "metrics.f1 must hold numbers 'mean' and 'std'"),
        (RUN_FACTS_FILE, {"steps": 3}, r"missing key\(s\) \['base_model'"),
        (RUN_FACTS_FILE, sample_run_facts(tokens_trained=-5), "'tokens_trained' must be a non-negative integer"),
        (RUN_FACTS_FILE, sample_run_facts(phases=[{"name": "short", "steps": 3}]), "'phases' must be a list of"),
    ],
)
def test_malformed_input_files_are_refused(model_dir, file, content, message):
    write(model_dir / file, content)
    with pytest.raises(ValueError, match=message):
        render_model_card(model_dir, REPO_ID)


def test_missing_run_facts_or_weights_are_refused(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="No safetensors weights"):
        read_run(model_dir)
    (model_dir / RUN_FACTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="run_facts.json not found"):
        read_run(model_dir)


def pretrain_tiny(tmp_path: Path, *args: str) -> Path:
    """`recipes/pretrain.py` on a tiny model for a few steps; its output directory."""
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR)
    tiny_config(tokenizer).to_json_file(tmp_path / "tiny.json")
    out = tmp_path / "run"
    command = [sys.executable, "recipes/pretrain.py", "--output_dir", str(out), "--save_strategy", "no",
               "--per_device_train_batch_size", "4", "--max_seq_length", "64",
               "--model_config", str(tmp_path / "tiny.json"), *args]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_card_of_a_real_run_shorter_than_its_logging_interval(tmp_path):
    out = pretrain_tiny(tmp_path, "--max_steps", "2", "--logging_steps", "10", "--max_eval_documents", "0")
    facts = json.loads((out / RUN_FACTS_FILE).read_text())
    assert not [entry for entry in facts["log_history"] if "loss" in entry or "eval_loss" in entry]
    rendered = render_model_card(out, REPO_ID)
    assert rendered.images == {} and "Training curves: not measured" in rendered.card.text
    assert "| Optimizer steps | 2 |" in rendered.card.text


@pytest.mark.slow
def test_card_of_a_real_pretraining_run(tmp_path):
    """`recipes/pretrain.py` runs three steps; the card shows what its run_facts.json and eval_results.json hold."""
    out = pretrain_tiny(tmp_path, "--max_steps", "3", "--logging_steps", "1", "--max_eval_documents", "8")
    facts = json.loads((out / RUN_FACTS_FILE).read_text())
    held_out = json.loads((out / HELD_OUT_EVAL_FILE).read_text())["eval_loss"]
    rendered = render_model_card(out, REPO_ID)
    text = rendered.card.text
    assert f"| Tokens trained (non-padding, counted during training) | {facts['tokens_trained']:,} |" in text
    assert f"| Optimizer steps | {facts['steps']} |" in text
    assert f"| Medical lexicon | {facts['masking']['lexicon_terms']:,} terms" in text
    assert f"| Held-out MLM loss at the end of training (15.0% masking) | {held_out:.4f} |" in text
    for name, counts in facts["sources"].items():
        assert f"| {name} | `{facts['source_paths'][name]}` |" in text and f"| {counts['tokens']:,} |" in text
    assert "trained from scratch" in text and rendered.card.data.base_model is None
    # no mlm_eval_results.json: the run's own held-out top-k tables, with the data they were measured on
    held_out_set, metrics = facts["held_out"], json.loads((out / HELD_OUT_EVAL_FILE).read_text())
    assert held_out_set["rows"] > 0 and facts["masking"]["eval_seed"] == 42
    assert (f"{held_out_set['documents']:,} documents in {held_out_set['rows']:,} rows, {held_out_set['tokens']:,} "
            "tokens,\n15.0% of tokens masked (seed 42),\nmeasured by the training run itself") in text
    report = {"top_k": [1, 5, 10, 25], "metrics": {key.removeprefix("eval_"): value for key, value in metrics.items()}}
    assert_top_k_tables(text, report)
    assert rendered.images[TRAINING_CURVES_FILE].startswith(b"\x89PNG")
