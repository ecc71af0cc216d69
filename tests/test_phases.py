"""Training in phases: the base config's token budget, validation, one lr and masking schedule, the run end to end."""

import json
import re

import pytest
import torch
import yaml
from conftest import REPO_ROOT
from test_pretrain_recipe import run_recipe
from transformers import get_scheduler

from clinical_modernbert.artifacts import RunFacts
from clinical_modernbert.checkpoints import run_is_finished
from clinical_modernbert.configs import DataArguments, MaskingArguments, ModelArguments, PretrainTrainingArguments
from clinical_modernbert.parsing import parse_recipe_args
from clinical_modernbert.phases import combine_facts, phase_arguments, plan_phases
from clinical_modernbert.pretraining import build_collators

BASE_CONFIG = REPO_ROOT / "recipes" / "configs" / "clinical_modernbert_base.yaml"
CARD_TOKENS = 13_004_002_816  # the original Clinical ModernBERT card: 150,000 steps, batch 128
ARGUMENTS = [ModelArguments, DataArguments, MaskingArguments, PretrainTrainingArguments]


def training_args(tmp_path, **overrides) -> PretrainTrainingArguments:
    values = dict(output_dir=str(tmp_path / "run"), use_cpu=True, report_to="none", max_steps=10,
                  per_device_train_batch_size=4, lr_scheduler_type="warmup_stable_decay",
                  lr_scheduler_kwargs={"num_decay_steps": 3}, warmup_steps=2, learning_rate=1e-3,
                  phases=[{"name": "short", "max_seq_length": 128, "max_steps": 6},
                          {"name": "long", "max_seq_length": 256, "max_steps": 4, "per_device_train_batch_size": 2}])
    values.update(overrides)
    return PretrainTrainingArguments(**values)


@pytest.mark.parametrize("processes", [8, 16, 32])
def test_base_config_trains_the_cards_token_budget_with_batch_128(processes):
    _, data_args, _, args = parse_recipe_args(ARGUMENTS, args=["--config", str(BASE_CONFIG), "--bf16", "false",
                                                               "--use_cpu", "true"])
    plan = plan_phases(data_args, args, world_size=processes)
    assert [p.max_seq_length for p in plan] == [512, 8192]
    for phase in plan:
        assert phase.global_batch_size == 128
        assert phase.per_device_train_batch_size * phase.gradient_accumulation_steps * processes == 128
        assert phase.tokens == phase.max_steps * 128 * phase.max_seq_length
    assert sum(p.max_steps for p in plan) == 150_000
    total = sum(p.tokens for p in plan)
    assert abs(total - CARD_TOKENS) / CARD_TOKENS < 0.05, total


def test_no_phases_is_one_phase_of_the_top_level_settings(tmp_path):
    args = training_args(tmp_path, phases=[], lr_scheduler_type="linear", gradient_accumulation_steps=3)
    data_args = DataArguments(max_seq_length=200)
    [phase] = plan_phases(data_args, args)
    assert (phase.max_seq_length, phase.max_steps, phase.global_batch_size) == (200, 10, 12)
    assert phase.output_dir == args.output_dir and phase.steps_before == 0 and phase.total_steps == 10
    model_args = ModelArguments()
    phase_model, phase_data, phase_training = phase_arguments(phase, [phase], model_args, data_args, args)
    assert phase_model == model_args and phase_data == data_args
    assert phase_training.to_dict() == args.to_dict()


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(phases=[{"name": "a", "max_seq_length": 128, "max_steps": 5}] * 2), "Phase names must be unique"),
    (dict(phases=[{"name": "a", "max_seq_length": 128, "max_steps": 0}]), "'a': max_steps must be a positive"),
    (dict(phases=[{"name": "a", "max_seq_length": 16384, "max_steps": 10}]), r"max_seq_length must be in \[8, 8192\]"),
    (dict(phases=[{"name": "a/b", "max_seq_length": 128, "max_steps": 10}]), "non-empty folder name"),
    (dict(phases=[{"name": "a", "max_seq_length": 128, "max_step": 10}]), r"Unknown phase key\(s\) \['max_step'\]"),
    (dict(max_steps=20), "max_steps=20 but the phases"),
])
def test_bad_phases_are_refused_when_parsed(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        training_args(tmp_path, **overrides)


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(lr_scheduler_type="linear"), "needs lr_scheduler_type: warmup_stable_decay"),
    (dict(warmup_steps=7), r"warmup_steps \(7\) must fit in the first phase"),
    (dict(lr_scheduler_kwargs={"num_decay_steps": 5}), r"num_decay_steps \(5\) must fit in the last phase"),
    (dict(lr_scheduler_kwargs={"num_decay_steps": 2, "num_stable_steps": 5}), "not num_stable_steps"),
    (dict(phases=[{"name": "a", "max_seq_length": 128, "max_steps": 5, "global_batch_size": 6},
                  {"name": "b", "max_seq_length": 128, "max_steps": 5}]), "does not split evenly over 4 processes"),
])
def test_bad_phase_plans_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        plan_phases(DataArguments(), training_args(tmp_path, **overrides), world_size=4)


def test_global_batch_size_sets_per_device_batch_and_accumulation(tmp_path):
    phases = [{"name": "a", "max_seq_length": 128, "max_steps": 5, "global_batch_size": 48,
               "per_device_train_batch_size": 5}, {"name": "b", "max_seq_length": 128, "max_steps": 5}]
    plan = plan_phases(DataArguments(), training_args(tmp_path, phases=phases), world_size=2)
    # 24 rows per process: the largest per-device batch up to 5 that divides 24 is 4, so 6 micro-batches
    assert (plan[0].per_device_train_batch_size, plan[0].gradient_accumulation_steps) == (4, 6)
    assert (plan[1].per_device_train_batch_size, plan[1].gradient_accumulation_steps, plan[1].global_batch_size) == (
        4, 1, 8)


def test_each_phase_trains_in_its_folder_from_the_phase_before(tmp_path):
    args = training_args(tmp_path)
    plan = plan_phases(DataArguments(), args)
    model_args = ModelArguments(model_config="tiny.json")
    first, second = (phase_arguments(phase, plan, model_args, DataArguments(), args) for phase in plan)
    assert first[0] == model_args
    assert (second[0].model_name_or_path, second[0].model_config) == (str(tmp_path / "run" / "phase-short"), None)
    assert [a.max_seq_length for _, a, _ in (first, second)] == [128, 256]
    assert [(a.output_dir, a.max_steps, a.per_device_train_batch_size) for _, _, a in (first, second)] == [
        (str(tmp_path / "run" / "phase-short"), 6, 4), (str(tmp_path / "run" / "phase-long"), 4, 2)]


def test_phases_follow_one_learning_rate_schedule(tmp_path):
    args = training_args(tmp_path, warmup_steps=0.2)  # a ratio: of all 10 steps
    plan = plan_phases(DataArguments(), args)
    rates = []
    for phase in plan:
        _, _, phase_args = phase_arguments(phase, plan, ModelArguments(), DataArguments(), args)
        rates += _learning_rates(phase_args, phase_args.max_steps)
    whole = training_args(tmp_path, phases=[])  # the same schedule as a single run of 10 steps
    assert rates == pytest.approx(_learning_rates(whole, 10))
    assert rates[:3] == pytest.approx([0, 5e-4, 1e-3]) and rates[-1] < rates[-2] < rates[-3] == pytest.approx(1e-3)


def _learning_rates(args: PretrainTrainingArguments, steps: int) -> list[float]:
    """The learning rate of each step, from the scheduler the Trainer builds out of these arguments."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(steps),
                              num_training_steps=steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_phases_follow_one_masking_schedule(tmp_path, embedded_tokenizer):
    args = training_args(tmp_path)
    plan = plan_phases(DataArguments(), args)
    masking = MaskingArguments()
    rates = []
    for phase in plan:
        _, _, phase_args = phase_arguments(phase, plan, ModelArguments(), DataArguments(), args)
        collator, _ = build_collators(embedded_tokenizer, masking, phase_args, steps_before=phase.steps_before,
                                      total_steps=phase.total_steps)
        rates += [collator.schedule(step) for step in range(phase.max_steps)]
    whole, _ = build_collators(embedded_tokenizer, masking, training_args(tmp_path, phases=[]))
    assert rates == pytest.approx([whole.schedule(step) for step in range(10)])
    assert rates[0] == pytest.approx(0.30) and rates[-1] == pytest.approx(0.15)
    assert rates[5] > rates[6]  # last step of the first phase, first of the second: consecutive points


def test_combined_facts_sum_counts_and_continue_the_log():
    def facts(name, steps, tokens, base):
        return RunFacts(
            base_model=base, global_batch_size=8, max_seq_length=128 * steps, packing=True, attn_implementation="sdpa",
            precision="fp32", learning_rate=1e-4, source_weights={"pubmed": 1.0}, source_paths={"pubmed": "json"},
            masking={}, steps=steps, tokens_trained=tokens,
            sources={"pubmed": {"documents": steps, "tokens": tokens}}, masking_counts={"masked": 2 * steps},
            phases=[{"name": name, "steps": steps, "tokens_trained": tokens}],
            log_history=[{"step": s, "loss": 1.0} for s in range(1, steps + 1)] + [{"train_runtime": 1.0}])

    combined = combine_facts([facts("short", 3, 30, "org/base"), facts("long", 2, 50, "run/phase-short")])
    assert combined.base_model == "org/base" and combined.max_seq_length == 256
    assert (combined.steps, combined.tokens_trained) == (5, 80)
    assert combined.sources == {"pubmed": {"documents": 5, "tokens": 80}}
    assert combined.masking_counts == {"masked": 10}
    assert [p["name"] for p in combined.phases] == ["short", "long"]
    assert [e["step"] for e in combined.log_history if "step" in e] == [1, 2, 3, 4, 5]


def test_a_phase_is_finished_when_its_run_facts_cover_its_steps(tmp_path):
    [phase] = plan_phases(DataArguments(), training_args(tmp_path, phases=[], lr_scheduler_type="linear"))
    assert not run_is_finished(phase.output_dir, phase.max_steps)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run_facts.json").write_text(json.dumps({"steps": 6}))
    assert not run_is_finished(phase.output_dir, phase.max_steps)  # a shorter earlier run in the same folder
    (tmp_path / "run" / "run_facts.json").write_text(json.dumps({"steps": 10}))
    assert run_is_finished(phase.output_dir, phase.max_steps)
    (tmp_path / "run" / "run_facts.json").write_text('{"steps": 1')  # cut short while written
    assert not run_is_finished(phase.output_dir, phase.max_steps)


@pytest.mark.slow
def test_two_phases_end_to_end(tmp_path):
    """6 steps of 128-token rows, then 4 of 256 warm-started from them; rerun: nothing to do."""
    config = yaml.safe_load((REPO_ROOT / "recipes" / "configs" / "embedded_default.yaml").read_text())
    out = tmp_path / "run"
    config.update(output_dir=str(out), max_steps=10, per_device_train_batch_size=4, logging_steps=1,
                  max_eval_documents=8, save_strategy="no", lr_scheduler_type="warmup_stable_decay",
                  warmup_steps=2, lr_scheduler_kwargs={"num_decay_steps": 3},
                  phases=[{"name": "short", "max_seq_length": 128, "max_steps": 6},
                          {"name": "long", "max_seq_length": 256, "max_steps": 4, "per_device_train_batch_size": 2}])
    path = tmp_path / "phases.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_recipe("--config", str(path))

    assert re.search(r"Plan: phase short: 6 steps \(from step 0\), 4 rows .* x 128 tokens = 512 tokens per step, "
                     r"3072 tokens", result.stdout)
    assert re.search(r"Plan: phase long: 4 steps \(from step 6\), 2 rows .* x 256 tokens", result.stdout)
    assert "Plan: 2 phase(s), 10 steps, 5120 tokens in total" in result.stdout
    short, long = out / "phase-short", out / "phase-long"
    assert f"Model: warm start from {short}" in result.stdout
    assert json.loads((long / "run_facts.json").read_text())["base_model"] == str(short)
    assert json.loads((short / "config.json").read_text()) == json.loads((long / "config.json").read_text())
    assert (out / "model.safetensors").read_bytes() == (long / "model.safetensors").read_bytes()

    facts = json.loads((out / "run_facts.json").read_text())
    assert facts["base_model"] is None and facts["from_scratch_config"] == "embedded"
    assert facts["steps"] == 10 and [(p["name"], p["steps"], p["max_seq_length"]) for p in facts["phases"]] == [
        ("short", 6, 128), ("long", 4, 256)]
    assert facts["tokens_trained"] == sum(p["tokens_trained"] for p in facts["phases"]) > 0
    logged = {e["step"]: e for e in facts["log_history"] if "loss" in e}
    assert sorted(logged) == list(range(1, 11))
    whole = training_args(tmp_path, phases=[])
    assert [logged[s]["learning_rate"] for s in range(1, 11)] == pytest.approx(_learning_rates(whole, 10))
    assert [logged[s]["mlm_probability"] for s in range(1, 11)] == pytest.approx(
        [round(0.30 - 0.15 * s / 9, 4) for s in range(10)])
    # warm start: the second phase begins where the first ended, far below a fresh model's first loss
    assert logged[7]["loss"] < logged[1]["loss"] - 0.3

    weights = (out / "model.safetensors").read_bytes()
    rerun = run_recipe("--config", str(path))
    assert rerun.stdout.count("already finished") == 2 and "global batch" not in rerun.stdout
    assert (out / "model.safetensors").read_bytes() == weights
    assert json.loads((out / "run_facts.json").read_text()) == facts

    (long / "run_facts.json").unlink()  # as if stopped during the second phase: only that one runs again
    again = run_recipe("--config", str(path))
    assert "phase short already finished" in again.stdout and "Train: phase long" in again.stdout
    assert (out / "model.safetensors").read_bytes() == weights
