"""The main job end to end: `recipes/pretrain.py` in a subprocess, its output loaded the ways users load it."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, pipeline

from conftest import REPO_ROOT

FAST = ["--max_steps", "6", "--per_device_train_batch_size", "4", "--max_seq_length", "128",
        "--logging_steps", "2", "--max_eval_documents", "8", "--save_strategy", "no"]


def run_recipe(*args, launcher=(sys.executable,), check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
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


@pytest.mark.slow
def test_recipe_saves_metrics_and_run_facts(trained_dir):
    facts = json.loads((trained_dir / "run_facts.json").read_text())
    assert facts["steps"] == 6 and facts["global_batch_size"] == 4 and facts["max_seq_length"] == 128
    assert set(facts["sources"]) == {"sample_corpus", "icd9_codes", "icd10_codes"}
    assert facts["tokens_trained"] > 0
    assert sum(s["tokens"] for s in facts["sources"].values()) >= facts["tokens_trained"]
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
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not on PATH")
    out = tmp_path / "ddp"
    with socket.socket() as probe:  # a free rendezvous port: the default 29500 may be held by another run
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = ["accelerate", "launch", "--config_file", str(REPO_ROOT / "recipes/accelerate_configs/cpu_ddp.yaml"),
                "--main_process_port", str(port)]
    result = run_recipe("--output_dir", str(out), *FAST, "--use_cpu", "true", launcher=launcher)
    facts = json.loads((out / "run_facts.json").read_text())
    assert facts["global_batch_size"] == 8  # 4 per process x 2 processes
    assert AutoModelForMaskedLM.from_pretrained(out).config.model_type == "modernbert"
    # the held-out set is streamed by the main process only; the other one loads what it saved
    assert result.stdout.count("held-out documents in") == 1
    assert result.stdout.count("evaluation rows loaded from") == 1
    assert result.returncode == 0
