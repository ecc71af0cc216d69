"""Checkpoints: complete only once all files are written, broken ones set aside, finished runs not rerun, kill -9."""

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest
import torch
from conftest import REPO_ROOT
from safetensors.torch import load_file
from test_pretrain_recipe import cpu_ddp_launcher, run_recipe
from test_trainer import make_trainer, write_corpus

from clinical_modernbert import checkpoints as ckpt
from clinical_modernbert.artifacts import RUN_FACTS_FILE
from clinical_modernbert.checkpoints import (
    INCOMPLETE_DIR,
    MANIFEST_FILE,
    mark_complete,
    resolve_checkpoint,
    rotate_checkpoints,
)
from clinical_modernbert.configs import PretrainTrainingArguments
from clinical_modernbert.trainer import STREAM_STATE_FILE

STREAM_STATE = STREAM_STATE_FILE.format(rank=0)
CHECKPOINT_FILES = ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
                    STREAM_STATE]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, embedded_tokenizer):
    """An MLMTrainer run of 4 steps with complete checkpoints at steps 2 and 4."""
    root = tmp_path_factory.mktemp("trained")
    trainer = make_trainer(root / "run", embedded_tokenizer, write_corpus(root / "corpus.jsonl"), max_steps=4,
                           save_steps=2)
    trainer.train()
    return root / "run"


@pytest.fixture
def run_dir(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


def args_for(output_dir, **overrides):
    return PretrainTrainingArguments(output_dir=str(output_dir), max_steps=4, report_to="none", **overrides)


def test_a_saved_checkpoint_lists_every_file_of_the_trainer_and_the_stream(trained_run):
    for step in (2, 4):
        manifest = json.loads((trained_run / f"checkpoint-{step}" / MANIFEST_FILE).read_text())["files"]
        assert set(CHECKPOINT_FILES) <= set(manifest)
        assert all(entry["size"] > 0 for entry in manifest.values())
    assert resolve_checkpoint(args_for(trained_run)) == str(trained_run / "checkpoint-4")


def test_checkpoint_is_complete_before_older_ones_are_rotated_away(tmp_path, embedded_tokenizer, monkeypatch):
    # at every rotation the new checkpoint is already complete and the older one was not yet deleted by anyone
    seen = []

    def rotate(run_dir, limit, keep):
        newest = ckpt.checkpoints(run_dir)
        seen.append(([p.name for p in newest], ckpt.checkpoint_problem(newest[0])))
        rotate_checkpoints(run_dir, limit, keep)

    monkeypatch.setattr("clinical_modernbert.trainer.rotate_checkpoints", rotate)
    trainer = make_trainer(tmp_path / "run", embedded_tokenizer, write_corpus(tmp_path / "corpus.jsonl"),
                           max_steps=4, save_steps=2, save_total_limit=1)
    trainer.train()
    assert seen == [(["checkpoint-2"], None), (["checkpoint-4", "checkpoint-2"], None)]
    assert [p.name for p in ckpt.checkpoints(tmp_path / "run")] == ["checkpoint-4"]


def test_rotation_deletes_only_complete_checkpoints_beyond_the_limit(tmp_path):
    for step in (1, 2, 3, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x" * step)
    for step in (1, 2, 3):
        mark_complete(tmp_path / f"checkpoint-{step}")
    rotate_checkpoints(tmp_path, 1, keep=())
    # checkpoint-4 is incomplete: neither counted nor deleted; the newest complete one stays
    assert [p.name for p in ckpt.checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-3"]


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_file_sets_the_newest_checkpoint_aside(run_dir, name, damage, caplog):
    path = run_dir / "checkpoint-4" / name
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="clinical_modernbert.checkpoints"):
        assert resolve_checkpoint(args_for(run_dir)) == str(run_dir / "checkpoint-2")
    message = " ".join(record.getMessage() for record in caplog.records)
    assert "checkpoint-4 is incomplete" in message and name in message
    assert (run_dir / INCOMPLETE_DIR / "checkpoint-4" / MANIFEST_FILE).is_file()  # set aside, not deleted
    assert not (run_dir / "checkpoint-4").exists()


def test_a_same_size_corruption_is_found(run_dir, caplog):
    path = run_dir / "checkpoint-4" / "optimizer.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="clinical_modernbert.checkpoints"):
        assert resolve_checkpoint(args_for(run_dir)).endswith("checkpoint-2")
    assert "optimizer.pt is corrupted" in caplog.text


def test_an_unmarked_checkpoint_is_set_aside_and_a_second_one_of_the_same_step_too(run_dir, caplog):
    (run_dir / "checkpoint-4" / MANIFEST_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="clinical_modernbert.checkpoints"):
        assert resolve_checkpoint(args_for(run_dir)).endswith("checkpoint-2")
    assert f"{MANIFEST_FILE} is missing" in caplog.text
    shutil.copytree(run_dir / INCOMPLETE_DIR / "checkpoint-4", run_dir / "checkpoint-4")
    assert resolve_checkpoint(args_for(run_dir)).endswith("checkpoint-2")
    assert sorted(p.name for p in (run_dir / INCOMPLETE_DIR).iterdir()) == ["checkpoint-4", "checkpoint-4.2"]


def test_explicit_resume_of_a_broken_checkpoint_names_the_file(run_dir):
    checkpoint = run_dir / "checkpoint-4"
    (checkpoint / "scheduler.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoint-4 cannot be resumed from: scheduler.pt is truncated"):
        resolve_checkpoint(args_for(run_dir, resume_from_checkpoint=str(checkpoint)))
    assert checkpoint.is_dir()  # an explicit choice is reported, not moved


def test_an_unmarked_checkpoint_can_be_marked_by_hand(run_dir):
    checkpoint = run_dir / "checkpoint-4"
    (checkpoint / MANIFEST_FILE).unlink()
    args = args_for(run_dir, resume_from_checkpoint=str(checkpoint))
    with pytest.raises(ValueError, match=r"mark_complete\('.*checkpoint-4'\)"):
        resolve_checkpoint(args)
    mark_complete(checkpoint)
    assert resolve_checkpoint(args) == str(checkpoint)


def test_a_missing_stream_state_is_an_error_not_a_silent_restart_of_the_counters(run_dir, embedded_tokenizer):
    checkpoint = run_dir / "checkpoint-2"
    (checkpoint / STREAM_STATE).unlink()
    trainer = make_trainer(run_dir, embedded_tokenizer, write_corpus(run_dir / "corpus.jsonl"), max_steps=4)
    with pytest.raises(ValueError, match=f"{STREAM_STATE} is missing: .* saved by fewer processes"):
        trainer.train(resume_from_checkpoint=str(checkpoint))


def test_a_stream_state_of_another_number_of_processes_is_an_error(run_dir, embedded_tokenizer):
    path = run_dir / "checkpoint-2" / STREAM_STATE
    path.write_text(json.dumps({**json.loads(path.read_text()), "world_size": 2}))
    trainer = make_trainer(run_dir, embedded_tokenizer, write_corpus(run_dir / "corpus.jsonl"), max_steps=4)
    with pytest.raises(ValueError, match="saved by 2 processes, this run has 1"):
        trainer.train(resume_from_checkpoint=str(run_dir / "checkpoint-2"))


def test_resuming_a_checkpoint_at_max_steps_trains_nothing(run_dir, embedded_tokenizer):
    trainer = make_trainer(run_dir, embedded_tokenizer, write_corpus(run_dir / "corpus.jsonl"), max_steps=4)
    trainer.train(resume_from_checkpoint=str(run_dir / "checkpoint-4"))
    assert trainer.state.global_step == 4 and trainer.seen == []
    saved = load_file(run_dir / "checkpoint-4" / "model.safetensors")
    assert all(torch.equal(saved[name], value) for name, value in trainer.model.state_dict().items()
               if name in saved)


# -- the recipe: a finished run rerun, and kill -9 ---------------------------------------------------------------
RECIPE = ["--max_steps", "4", "--per_device_train_batch_size", "4", "--max_seq_length", "128", "--logging_steps",
          "2", "--max_eval_documents", "0", "--save_steps", "2"]


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_finished_run_rerun_is_a_no_op_and_overwrite_starts_over(tmp_path):
    out = tmp_path / "model"
    run_recipe("--output_dir", str(out), *RECIPE)
    before = snapshot(out)
    rerun = run_recipe("--output_dir", str(out), *RECIPE)
    assert "already finished" in rerun.stdout and "global batch" not in rerun.stdout
    assert snapshot(out) == before
    (out / "checkpoint-9").mkdir()  # a checkpoint of a longer earlier run must not survive a start-over
    over = run_recipe("--output_dir", str(out), *RECIPE, "--overwrite_output_dir", "true")
    assert "starting over" in over.stdout and "resuming" not in over.stdout
    assert [p.name for p in ckpt.checkpoints(out)] == ["checkpoint-4"]  # save_total_limit 1
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    after = snapshot(out)
    assert after["run_facts.json"] != before["run_facts.json"]


@pytest.mark.slow
def test_two_processes_mark_a_checkpoint_once_both_wrote_and_resume_from_the_complete_one(tmp_path):
    out = tmp_path / "ddp"
    args = ["--output_dir", str(out), *RECIPE, "--save_total_limit", "2", "--use_cpu", "true"]
    run_recipe(*args, launcher=cpu_ddp_launcher())
    manifest = json.loads((out / "checkpoint-4" / MANIFEST_FILE).read_text())["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth", STREAM_STATE, STREAM_STATE_FILE.format(rank=1)} <= set(manifest)
    # as if stopped before process 1 wrote its part of checkpoint-4, and before the final save
    (out / "checkpoint-4" / STREAM_STATE_FILE.format(rank=1)).unlink()
    (out / RUN_FACTS_FILE).unlink()
    result = run_recipe(*args, launcher=cpu_ddp_launcher())
    assert result.stdout.count(f"checkpoint-4 is incomplete ({STREAM_STATE_FILE.format(rank=1)} is missing)") == 1
    assert result.stdout.count("Train: resuming from") == 1 and f"resuming from {out / 'checkpoint-2'}" in result.stdout
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    assert (out / INCOMPLETE_DIR / "checkpoint-4").is_dir() and (out / "checkpoint-4" / MANIFEST_FILE).is_file()


KILL_RECIPE = ["--max_steps", "8", "--per_device_train_batch_size", "4", "--max_seq_length", "128",
               "--logging_steps", "4", "--max_eval_documents", "0", "--save_steps", "2", "--save_total_limit", "2"]


def launch(out, log):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "recipes" / "pretrain.py"), "--output_dir", str(out),
                             *KILL_RECIPE], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)


def incomplete(out):
    """The checkpoint folders of `out` without a manifest, by inode."""
    if not out.is_dir():
        return set()
    return {p.stat().st_ino for p in ckpt.checkpoints(out) if not (p / MANIFEST_FILE).exists()}


def kill_during_a_save(process, out, nth, delay):
    """SIGKILL `delay` seconds after the `nth` new checkpoint folder of this run appears (without its manifest).

    False if the run ended first. Incomplete folders left by an earlier kill do not count: this run sets them aside.
    """
    seen = incomplete(out)
    while process.poll() is None:
        if new := incomplete(out) - seen:
            seen |= new
            nth -= 1
            if nth == 0:
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                return True
        time.sleep(0.002)
    return False


def training_seconds(log: str) -> float:
    """Seconds from the start of training to the end of the final save, from the run's log lines."""
    stamps = {}
    for line in log.splitlines():
        for key in ("Train: phase", "Save: model"):
            if key in line:
                stamps[key] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return (stamps["Save: model"] - stamps["Train: phase"]).total_seconds()


def kill_while_training(process, log_path, delay):
    """SIGKILL `delay` seconds after the run starts training (its log says so); False if the run ended first."""
    while process.poll() is None and "Train: phase" not in log_path.read_text():
        time.sleep(0.01)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        return True


@pytest.mark.slow
def test_killed_at_random_moments_the_run_resumes_to_the_uninterrupted_weights(tmp_path):
    reference = run_recipe("--output_dir", str(tmp_path / "reference"), *KILL_RECIPE)
    duration = training_seconds(reference.stdout)
    rng = random.Random(15)
    out = tmp_path / "killed"
    kills, during_saves = [], 0
    for attempt, mode in enumerate(("save", "timer", "save", "timer")):
        log_path = tmp_path / f"attempt{attempt}.log"
        before = incomplete(out)
        with log_path.open("w") as log:
            process = launch(out, log)
            if mode == "save":
                nth, delay = rng.randint(1, 2), rng.uniform(0.0, 0.05)
                killed = kill_during_a_save(process, out, nth, delay)
            else:
                nth, delay = None, rng.uniform(0.0, 1.0) * duration
                killed = kill_while_training(process, log_path, delay)
            process.wait()
        if killed:
            kills.append((mode, nth, round(delay, 3)))
            during_saves += bool(incomplete(out) - before)
        elif process.returncode != 0:
            raise AssertionError(f"run failed:\n{log_path.read_text()[-4000:]}")
        else:
            break
    print(f"uninterrupted training and save {duration:.1f} s; kills (mode, nth save, seconds after it or after "
          f"training began): {kills}; {during_saves} of them left an incomplete checkpoint")
    final = run_recipe("--output_dir", str(out), *KILL_RECIPE)  # until it finishes
    assert "already finished" in final.stdout or "Load it with" in final.stdout
    assert len(kills) >= 2 and during_saves >= 1, kills  # the test did kill, once during a save at least
    assert (out / INCOMPLETE_DIR).is_dir()  # where the checkpoint a kill left incomplete was set aside
    expected = load_file(tmp_path / "reference" / "model.safetensors")
    resumed = load_file(out / "model.safetensors")
    assert expected.keys() == resumed.keys()
    differing = [name for name in expected if not torch.equal(expected[name], resumed[name])]
    assert not differing, f"weights differ after kills {kills}: {differing[:5]}"
    facts, expected_facts = (json.loads((run / "run_facts.json").read_text()) for run in (out, tmp_path / "reference"))
    assert facts["tokens_trained"] == expected_facts["tokens_trained"]
    assert facts["sources"] == expected_facts["sources"]
