"""The names of the files a run leaves behind, and how JSON ones are written and read."""

from __future__ import annotations

import json
import os
from pathlib import Path

# recipes/pretrain.py, in its output_dir
RUN_FACTS_FILE = "run_facts.json"  # what the run measured about itself (schema: run_facts.RunFacts)
HELD_OUT_EVAL_FILE = "eval_results.json"  # the Trainer's evaluation of the held-out rows
EVAL_SET_DIR = "eval_set"  # the held-out rows, saved once and reloaded by other processes and resumed runs
EVAL_SET_FINGERPRINT_FILE = "fingerprint.txt"  # in EVAL_SET_DIR: what those rows were built from
PHASE_DIR = "phase-{name}"  # a training phase's own output_dir, inside the run's
TRAINING_CURVES_FILE = "training_curves.png"  # plotted for the model card
LONG_CONTEXT_PLOT_FILE = "long_context.png"  # the long-context probe, beside the evaluation results and on the card
# recipes/evaluate_mlm.py, beside the model
MLM_EVAL_FILE = "mlm_eval_results.json"  # schema: mlm_eval.MlmEvalReport
# recipes/finetune.py (the model card lists every finetune_results_*.json beside the model)
FINETUNE_RESULTS_FILE = "finetune_results_{task}.json"  # schema: finetune_result.FinetuneResult
# recipes/extend_tokenizer.py, beside the extended tokenizer (carried into the pretraining run's output)
VOCABULARY_REPORT_FILE = "vocabulary_report.json"  # schema: vocabulary_report.VocabularyReport
ADDED_TOKENS_FILE = "added_tokens.tsv"


def save_json(data: dict, path: str | os.PathLike) -> None:
    """Write a JSON artifact, indented, keys in insertion order; whole or not at all (a run killed meanwhile leaves
    the previous file, or none: `run_facts.json`, written last, marks a finished run)."""
    staging = Path(f"{path}.tmp")
    staging.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(staging, path)


def read_json(path: str | os.PathLike):
    """A JSON file's content; malformed JSON raises naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"Malformed {path}: not valid JSON ({err})") from err
