"""Training in phases (short rows, then long context) with one learning-rate and masking schedule over all of them.

A run with `phases:` trains each phase as a full run of the recipe in `output_dir/phase-<name>`, phase k warm-starting
from phase k-1's final model; the last phase's model, with the run facts of all phases, then also lands in
`output_dir`. Without `phases:` the run is a single phase trained in `output_dir` itself, exactly as configured.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from accelerate import PartialState
from transformers import SchedulerType

from .artifacts import PHASE_DIR, RUN_FACTS_FILE, RunFacts
from .checkpoints import run_is_finished
from .configs import DataArguments, MaskingArguments, ModelArguments, PretrainTrainingArguments, TrainingPhase

logger = logging.getLogger(__name__)

SINGLE_PHASE_NAME = "main"


@dataclass(frozen=True)
class PlannedPhase:
    """A phase with everything derived: batch shape on this many processes, its place in the run, its folder."""

    name: str
    max_seq_length: int
    max_steps: int
    global_batch_size: int
    per_device_train_batch_size: int
    per_device_eval_batch_size: int
    gradient_accumulation_steps: int
    steps_before: int
    total_steps: int
    output_dir: str

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.max_seq_length

    @property
    def tokens(self) -> int:
        """Token slots of the phase (rows × length × steps); packing fills all but the stream's last rows."""
        return self.tokens_per_step * self.max_steps


def plan_phases(
    data_args: DataArguments, args: PretrainTrainingArguments, world_size: int | None = None
) -> list[PlannedPhase]:
    """The run's phases on `world_size` processes (default: this run's), checked; one phase when none is configured."""
    world_size = world_size or args.world_size
    phases = [TrainingPhase(**p) for p in args.phases] or [
        TrainingPhase(SINGLE_PHASE_NAME, data_args.max_seq_length, args.max_steps)
    ]
    total_steps = sum(p.max_steps for p in phases)
    plan, steps_before = [], 0
    for phase in phases:
        per_device = phase.per_device_train_batch_size or args.per_device_train_batch_size
        accumulation = args.gradient_accumulation_steps
        if phase.global_batch_size is not None:
            per_device, accumulation = batch_shape(phase, per_device, world_size)
        plan.append(PlannedPhase(
            name=phase.name,
            max_seq_length=phase.max_seq_length,
            max_steps=phase.max_steps,
            global_batch_size=per_device * accumulation * world_size,
            per_device_train_batch_size=per_device,
            per_device_eval_batch_size=phase.per_device_eval_batch_size or args.per_device_eval_batch_size,
            gradient_accumulation_steps=accumulation,
            steps_before=steps_before,
            total_steps=total_steps,
            output_dir=str(Path(args.output_dir) / PHASE_DIR.format(name=phase.name)) if len(phases) > 1
            else args.output_dir,
        ))
        steps_before += phase.max_steps
    if len(plan) > 1:
        check_phased_schedule(args, plan)
        if args.resume_from_checkpoint:
            raise ValueError(
                f"resume_from_checkpoint={args.resume_from_checkpoint!r} with phases: each phase resumes from the "
                "last checkpoint in its own folder by itself; leave resume_from_checkpoint out."
            )
    return plan


def batch_shape(phase: TrainingPhase, max_per_device: int, world_size: int) -> tuple[int, int]:
    """Per-device batch (the largest that divides this process's rows, at most `max_per_device`) and accumulation."""
    rows, remainder = divmod(phase.global_batch_size, world_size)
    if remainder:
        raise ValueError(
            f"Phase {phase.name!r}: global_batch_size {phase.global_batch_size} does not split evenly over "
            f"{world_size} processes; use a process count that divides it, or change global_batch_size."
        )
    per_device = max(size for size in range(1, min(max_per_device, rows) + 1) if rows % size == 0)
    return per_device, rows // per_device


def check_phased_schedule(args: PretrainTrainingArguments, plan: list[PlannedPhase]) -> None:
    """Phases share one warmup-stable-decay schedule: warmup within the first phase, decay within the last."""
    if args.lr_scheduler_type != SchedulerType.WARMUP_STABLE_DECAY:
        raise ValueError(
            f"Training in phases needs lr_scheduler_type: warmup_stable_decay (one schedule over all phases, warmup "
            f"in the first, decay in the last), got {args.lr_scheduler_type!r}."
        )
    kwargs = args.lr_scheduler_kwargs or {}
    if "num_stable_steps" in kwargs or "num_decay_steps" not in kwargs:
        raise ValueError(
            "Training in phases: give lr_scheduler_kwargs.num_decay_steps (and not num_stable_steps: the stable part "
            f"is what warmup and decay leave), got lr_scheduler_kwargs={kwargs}."
        )
    warmup = args.get_warmup_steps(plan[0].total_steps)
    if warmup > plan[0].max_steps:
        raise ValueError(f"warmup_steps ({warmup}) must fit in the first phase ({plan[0].name!r}, "
                         f"{plan[0].max_steps} steps).")
    if kwargs["num_decay_steps"] > plan[-1].max_steps:
        raise ValueError(f"lr_scheduler_kwargs.num_decay_steps ({kwargs['num_decay_steps']}) must fit in the last "
                         f"phase ({plan[-1].name!r}, {plan[-1].max_steps} steps).")


def phase_arguments(phase: PlannedPhase, plan: list[PlannedPhase], model_args: ModelArguments,
                    data_args: DataArguments, args: PretrainTrainingArguments):
    """The model, data and training arguments of one phase (a full run of the recipe)."""
    index = plan.index(phase)
    if index > 0:  # warm start from the phase before (its saved model and tokenizer)
        model_args = replace(model_args, model_name_or_path=plan[index - 1].output_dir, model_config=None)
    data_args = replace(data_args, max_seq_length=phase.max_seq_length)
    changes = dict(
        output_dir=phase.output_dir,
        max_steps=phase.max_steps,
        per_device_train_batch_size=phase.per_device_train_batch_size,
        per_device_eval_batch_size=phase.per_device_eval_batch_size,
        gradient_accumulation_steps=phase.gradient_accumulation_steps,
        phases=[],
    )
    if len(plan) > 1:  # one warmup-stable-decay schedule: warmup in the first phase, decay in the last
        changes["warmup_steps"] = args.get_warmup_steps(phase.total_steps) if index == 0 else 0
        changes["lr_scheduler_kwargs"] = {
            **args.lr_scheduler_kwargs,
            "num_decay_steps": args.lr_scheduler_kwargs["num_decay_steps"] if index == len(plan) - 1 else 0,
        }
    return model_args, data_args, replace(args, **changes)


def log_plan(plan: list[PlannedPhase]) -> None:
    for phase in plan:
        logger.info(
            "Plan: phase %s: %d steps (from step %d), %d rows (%d per device x %d accumulation x %d processes) x %d "
            "tokens = %d tokens per step, %d tokens", phase.name, phase.max_steps, phase.steps_before,
            phase.global_batch_size, phase.per_device_train_batch_size, phase.gradient_accumulation_steps,
            phase.global_batch_size // (phase.per_device_train_batch_size * phase.gradient_accumulation_steps),
            phase.max_seq_length, phase.tokens_per_step, phase.tokens,
        )
    logger.info("Plan: %d phase(s), %d steps, %d tokens in total", len(plan), plan[0].total_steps,
                sum(p.tokens for p in plan))


TrainPhase = Callable[[PlannedPhase, ModelArguments, DataArguments, MaskingArguments, PretrainTrainingArguments], None]


def run_phases(train: TrainPhase, model_args: ModelArguments, data_args: DataArguments,
               masking_args: MaskingArguments, args: PretrainTrainingArguments) -> None:
    """Train the phases in order with `train` (one full run each); finished phases are skipped."""
    plan = plan_phases(data_args, args)
    state = PartialState()
    if state.is_main_process:
        log_plan(plan)
    trained = False
    for phase in plan:
        if run_is_finished(phase.output_dir, phase.max_steps) and not args.overwrite_output_dir:
            if state.is_main_process:
                logger.info("Train: phase %s already finished in %s; nothing to do for it (pass "
                            "--overwrite_output_dir true to start over)", phase.name, phase.output_dir)
        else:
            phase_model, phase_data, phase_training = phase_arguments(phase, plan, model_args, data_args, args)
            train(phase, phase_model, phase_data, masking_args, phase_training)
            trained = True
        state.wait_for_everyone()  # the next phase loads what this one saved
    # a finished run run again changes nothing on disk
    if len(plan) > 1 and args.should_save and (trained or not run_is_finished(args.output_dir, plan[0].total_steps)):
        assemble_output(plan, args.output_dir)


def assemble_output(plan: list[PlannedPhase], output_dir: str) -> None:
    """Copy the last phase's model and results into `output_dir`, with run facts covering every phase."""
    for path in Path(plan[-1].output_dir).iterdir():
        if path.is_file():
            shutil.copy2(path, Path(output_dir) / path.name)
    facts = [RunFacts.read(Path(p.output_dir) / RUN_FACTS_FILE) for p in plan]
    combine_facts(facts).save(Path(output_dir) / RUN_FACTS_FILE)
    logger.info("Save: phase %s's model and the run facts of all %d phases in %s", plan[-1].name, len(plan),
                output_dir)


def combine_facts(phase_facts: list[RunFacts]) -> RunFacts:
    """One run's facts from its phases': the last phase's settings, the first's origin, counts summed over all.

    The log history is continued: each phase's steps are shifted by the steps of the phases before it.
    """
    first, last = phase_facts[0], phase_facts[-1]
    history, steps_before = [], 0
    for facts in phase_facts:
        history += [{**e, "step": e["step"] + steps_before} if "step" in e else e for e in facts.log_history]
        steps_before += facts.steps
    summed = {key: _sum_counts([getattr(f, key) for f in phase_facts]) for key in ("steps", "tokens_trained",
                                                                                    "sources", "masking_counts")}
    return replace(
        last,
        base_model=first.base_model,
        from_scratch_config=first.from_scratch_config,
        **summed,
        phases=[entry for facts in phase_facts for entry in facts.phases],
        log_history=history,
    )


def _sum_counts(values: list):
    """Element-wise sum of counts: numbers, or dicts of them (nested)."""
    if isinstance(values[0], dict):
        keys = dict.fromkeys(key for value in values for key in value)
        return {key: _sum_counts([value[key] for value in values if key in value]) for key in keys}
    return sum(values)
