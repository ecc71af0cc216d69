"""The main job end to end: `recipes/pretrain.py` in a subprocess, its output loaded the ways users load it."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, cpu_ddp_launcher
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, pipeline

from clinical_modernbert.logging_setup import REPLICA_LOG_LEVEL
from clinical_modernbert.masking import MaskingSchedule

FAST = ["--max_steps", "6", "--per_device_train_batch_size", "4", "--max_seq_length", "128",
        "--logging_steps", "2", "--max_eval_documents", "8", "--save_strategy", "no"]


def run_recipe(*args, launcher=(sys.executable,), check=True, env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run([*launcher, str(REPO_ROOT / "recipes" / "pretrain.py"), *args],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"recipe failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    result = run_recipe("--output_dir", str(out), *FAST)
    assert "Load it with" in result.stdout and str(out) in result.stdout.splitlines()[-1]
    return out


@pytest.mark.slow
def test_recipe_output_loads_with_auto_classes_and_pipeline(trained_dir):
    assert (trained_dir / "model.safetensors").is_file()
    assert not list(trained_dir.glob("*.bin")) or [p.name for p in trained_dir.glob("*.bin")] == ["training_args.bin"]
    tokenizer = AutoTokenizer.from_pretrained(trained_dir)
    encoder = AutoModel.from_pretrained(trained_dir)
    mlm = AutoModelForMaskedLM.from_pretrained(trained_dir)
    batch = tokenizer(["Aspirin 81 mg daily for coronary artery disease."], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
        logits = mlm(**batch).logits
    assert hidden.shape[-1] == encoder.config.hidden_size and logits.shape[-1] == mlm.config.vocab_size
    predictions = pipeline("fill-mask", model=str(trained_dir), top_k=3)("The patient takes [MASK] daily.")
    assert len(predictions) == 3 and all(0 <= p["score"] <= 1 for p in predictions)
    # the saved tokenizer truncates at the model's positions (the embedded one says 1e30 and would not)
    assert tokenizer.model_max_length == mlm.config.max_position_embeddings == 8192
    assert len(tokenizer("aspirin " * 20_000, truncation=True)["input_ids"]) == 8192


@pytest.mark.slow
def test_recipe_saves_metrics_and_run_facts(trained_dir):
    facts = json.loads((trained_dir / "run_facts.json").read_text())
    assert facts["steps"] == 6 and facts["global_batch_size"] == 4 and facts["max_seq_length"] == 128
    assert set(facts["sources"]) == {"sample_corpus", "icd9_codes", "icd10_codes"}
    assert facts["tokens_trained"] > 0
    assert sum(s["tokens"] for s in facts["sources"].values()) == facts["tokens_trained"]  # rows trained, not read
    assert json.loads((trained_dir / "train_results.json").read_text())["train_loss"] > 0
    assert "eval_loss" in json.loads((trained_dir / "eval_results.json").read_text())


@pytest.mark.slow
def test_output_dir_with_checkpoint_resumes(tmp_path):
    out = tmp_path / "model"
    common = ["--output_dir", str(out), *FAST[2:], "--save_strategy", "steps", "--save_steps", "3"]
    run_recipe("--max_steps", "3", *common)
    result = run_recipe("--max_steps", "6", *common)
    assert "resuming from" in result.stdout and "checkpoint-3" in result.stdout
    assert "evaluation rows loaded from" in result.stdout  # the held-out set is not streamed again
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


def test_unknown_config_key_lists_valid_keys(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("max_steps: 2\nlearning_rat: 0.1\n")
    result = run_recipe("--config", str(config), check=False)
    assert result.returncode != 0
    assert "Unknown key(s) ['learning_rat']" in result.stderr and "learning_rate" in result.stderr


def test_missing_data_file_is_named(tmp_path):
    config = tmp_path / "missing.yaml"
    config.write_text(
        "max_steps: 2\nsources:\n  - name: notes\n    path: json\n    data_files: /nonexistent/notes.jsonl\n"
    )
    result = run_recipe("--config", str(config), check=False)
    assert result.returncode != 0 and "/nonexistent/notes.jsonl" in result.stderr


@pytest.mark.slow
def test_two_process_cpu_ddp(tmp_path):
    out = tmp_path / "ddp"
    result = run_recipe("--output_dir", str(out), *FAST, "--use_cpu", "true", launcher=cpu_ddp_launcher(),
                        env={REPLICA_LOG_LEVEL: "INFO"})  # the other process's INFO lines too
    facts = json.loads((out / "run_facts.json").read_text())
    assert facts["global_batch_size"] == 8  # 4 per process x 2 processes
    assert AutoModelForMaskedLM.from_pretrained(out).config.model_type == "modernbert"
    # the held-out set is streamed by the main process only; the other one loads what it saved
    assert result.stdout.count("held-out documents in") == 1
    assert result.stdout.count("evaluation rows loaded from") == 1
    assert result.returncode == 0


@pytest.mark.slow
def test_two_processes_with_accumulation_train_through_many_passes(tmp_path):
    """2 processes, accumulation 3, shards of unequal length (41 documents: 21 and 20), about seven passes: every
    optimizer step gets exactly 3 micro-batches on each process, each masked at its own step's rate (a micro-batch
    masked for another step stops the run), and the per-source counters are those of the rows trained."""
    corpus = tmp_path / "small.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Note {i}: aspirin was given for chest pain " * (1 + i % 3)}) + "\n"
                              for i in range(41)))
    config = tmp_path / "small.yaml"
    config.write_text(json.dumps({
        "sources": [{"name": "small", "path": "json", "data_files": str(corpus)}],
        "max_seq_length": 64, "eval_fraction": 0.0, "max_eval_documents": 0, "max_steps": 12,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 3, "logging_steps": 1,
        "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "learning_rate": 1e-3,
        "output_dir": str(tmp_path / "out"), "use_cpu": True, "dataloader_pin_memory": False,
    }))  # JSON is YAML
    run_recipe("--config", str(config), launcher=cpu_ddp_launcher())
    out = tmp_path / "out"
    losses = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert [e["step"] for e in losses] == list(range(1, 13))
    assert all(e["micro_batches_per_step"] == 3 for e in losses)
    schedule = MaskingSchedule(0.30, 0.15, 12)
    assert [e["mlm_probability"] for e in losses] == [round(schedule(step), 4) for step in range(12)]
    facts = json.loads((out / "run_facts.json").read_text())
    assert facts["global_batch_size"] == 12 and facts["steps"] == 12
    assert facts["sources"]["small"]["tokens"] == facts["tokens_trained"]
    assert facts["sources"]["small"]["documents"] > 2 * 41  # passes happened inside the stream
