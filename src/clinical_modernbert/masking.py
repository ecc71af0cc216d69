"""Medical-token-weighted dynamic masking: a `DataCollatorForLanguageModeling` subclass and its rate schedule."""

from __future__ import annotations

import math
import multiprocessing as mp
from dataclasses import dataclass, field

import torch
from transformers import DataCollatorForLanguageModeling, TrainerCallback

from .data.packing import document_tensors

SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class MaskingSchedule:
    """Masking rate p(step) from `start` to `end` over `total_steps` optimizer steps."""

    start: float = 0.30
    end: float = 0.15
    total_steps: int = 1
    kind: str = "linear"

    def __post_init__(self):
        for name in ("start", "end"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"mlm_probability_{name} must be in (0, 1), got {value}")
        if self.kind not in SCHEDULES:
            raise ValueError(f"mlm_schedule must be one of {SCHEDULES}, got {self.kind!r}")
        self.total_steps = max(int(self.total_steps), 1)

    def __call__(self, step: int) -> float:
        progress = min(max(step / self.total_steps, 0.0), 1.0)
        if self.kind == "constant":
            return self.start
        if self.kind == "cosine":
            progress = (1 - math.cos(math.pi * progress)) / 2
        return self.start + (self.end - self.start) * progress


@dataclass
class MedicalMaskingCollator(DataCollatorForLanguageModeling):
    """Pads packed rows and masks them at the scheduled rate, medical tokens weighted by `medical_weight`.

    Examples hold `input_ids`, optional `medical_mask` (0 other, 1 term start, 2 term continuation) and optional
    `doc_lengths` (packed documents). The batch holds `input_ids`, `labels`, `attention_mask`, and for packed rows
    `position_ids` and `document_ids`, plus counters (`mask_stats`, `stream_stats`) that `MLMTrainer` pops.

    The current optimizer step lives in shared memory (`step`), set by `MaskingScheduleCallback`, so collator copies
    in dataloader worker processes follow the schedule.
    """

    schedule: MaskingSchedule | None = None
    medical_weight: float = 3.0
    whole_term_masking: bool = True
    whole_word_masking: bool = False
    step: object = field(default=None, repr=False)

    def __post_init__(self):
        if self.schedule is not None:
            self.mlm_probability = self.schedule.start
        super().__post_init__()
        if not self.medical_weight > 0:
            raise ValueError(f"medical_weight must be > 0, got {self.medical_weight}")
        if self.step is None:
            self.step = mp.Value("l", 0, lock=False)

    @property
    def current_probability(self) -> float:
        return self.schedule(self.step.value) if self.schedule is not None else self.mlm_probability

    def torch_call(self, examples: list[dict]) -> dict:
        input_ids = [torch.as_tensor(e["input_ids"], dtype=torch.long) for e in examples]
        seq_len = max(len(x) for x in input_ids)
        if self.pad_to_multiple_of:
            seq_len = -(-seq_len // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_ids = torch.full((len(examples), seq_len), self.tokenizer.pad_token_id, dtype=torch.long)
        medical = torch.zeros((len(examples), seq_len), dtype=torch.long)
        attention_mask = torch.zeros((len(examples), seq_len), dtype=torch.long)
        for b, (ids, example) in enumerate(zip(input_ids, examples)):
            batch_ids[b, : len(ids)] = ids
            attention_mask[b, : len(ids)] = 1
            if "medical_mask" in example:
                medical[b, : len(ids)] = torch.as_tensor(example["medical_mask"], dtype=torch.long)
        batch = {"attention_mask": attention_mask}
        if "doc_lengths" in examples[0]:
            batch["document_ids"], batch["position_ids"] = document_tensors(
                [e["doc_lengths"] for e in examples], seq_len
            )
        if "stream_stats" in examples[0]:
            batch["stream_stats"] = torch.tensor([e["stream_stats"] for e in examples], dtype=torch.long).sum(0)
        if "stream_position" in examples[0]:
            batch["stream_position"] = torch.tensor([e["stream_position"] for e in examples], dtype=torch.long)
        batch["input_ids"], batch["labels"], batch["mask_stats"] = self.mask_tokens(batch_ids, medical)
        return batch

    def mask_tokens(self, input_ids: torch.Tensor, medical: torch.Tensor):
        """Mask `input_ids` at the current rate; returns (inputs, labels, mask_stats)."""
        if self.seed is not None and (self.generator is None or self._generator_pid != mp.current_process().pid):
            self.create_rng("pt")
        special = self._special_tokens(input_ids)
        probability = torch.full(input_ids.shape, self.current_probability)
        probability.masked_fill_(special, 0.0)
        masked = torch.bernoulli(probability, generator=self.generator).bool()
        labels = input_ids.clone()
        labels[~masked] = -100
        inputs = self._replace(input_ids.clone(), masked)
        is_medical = (medical > 0) & ~special
        stats = torch.stack(
            [(~special).sum(), is_medical.sum(), masked.sum(), (masked & is_medical).sum()]
        ).long()
        return inputs, labels, stats

    def _special_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        special_ids = torch.tensor(self.tokenizer.all_special_ids, dtype=torch.long)
        return torch.isin(input_ids, special_ids)

    def _replace(self, inputs: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """80/10/10 replacement (configurable) as in the parent collator."""
        g = self.generator
        replaced = torch.bernoulli(torch.full(inputs.shape, self.mask_replace_prob), generator=g).bool() & masked
        inputs[replaced] = self.tokenizer.mask_token_id
        remaining = 1 - self.mask_replace_prob
        if self.random_replace_prob == 0 or remaining == 0:
            return inputs
        random_prob = torch.full(inputs.shape, self.random_replace_prob / remaining)
        randomized = torch.bernoulli(random_prob, generator=g).bool() & masked & ~replaced
        words = torch.randint(len(self.tokenizer), inputs.shape, dtype=torch.long, generator=g)
        inputs[randomized] = words[randomized]
        return inputs


class MaskingScheduleCallback(TrainerCallback):
    """Publishes the optimizer step to the collator (and its worker copies) before each step."""

    def __init__(self, collator: MedicalMaskingCollator):
        self.collator = collator

    def on_train_begin(self, args, state, control, **kwargs):
        self.collator.step.value = state.global_step

    def on_step_begin(self, args, state, control, **kwargs):
        self.collator.step.value = state.global_step
