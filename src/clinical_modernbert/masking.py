"""Medical-token-weighted dynamic masking: a `DataCollatorForLanguageModeling` subclass and its rate schedule."""

from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import torch
import xxhash
from transformers import DataCollatorForLanguageModeling, TrainerCallback

from .configs.checks import check_probability
from .configs.pretraining import MASKING_SCHEDULES
from .data.packing import document_tensors
from .data.rows import (
    DOC_LENGTHS,
    DOCUMENT_IDS,
    INPUT_IDS,
    MASK_INPUT,
    MASK_STATS,
    MASK_STEP,
    MEDICAL_MASK,
    POSITION_IDS,
    STREAM_POSITION,
    STREAM_STATS,
    TERM_FLAGS,
    MaskedBatch,
)


@dataclass
class MaskingSchedule:
    """Masking rate p(step) from `start` to `end` over `total_steps` optimizer steps, step counted from 0.

    The first step (0) masks at `start` and the last one (`total_steps - 1`) at exactly `end`. A run in phases
    gives each phase `offset`, the steps of the phases before it, and the total of all: `schedule(step)` of a
    phase's own step is then the rate of step `offset + step` of the whole run.
    """

    start: float = 0.30
    end: float = 0.15
    total_steps: int = 1
    kind: str = "linear"
    offset: int = 0

    def __post_init__(self):
        self.start = check_probability("mlm_probability_start", self.start)
        self.end = check_probability("mlm_probability_end", self.end)
        if self.kind not in MASKING_SCHEDULES:
            raise ValueError(f"mlm_schedule must be one of {MASKING_SCHEDULES}, got {self.kind!r}")
        self.total_steps = max(int(self.total_steps), 1)

    def __call__(self, step: int) -> float:
        progress = min(max((self.offset + step) / max(self.total_steps - 1, 1), 0.0), 1.0)
        if self.kind == "constant":
            return self.start
        if self.kind == "cosine":
            progress = (1 - math.cos(math.pi * progress)) / 2
        return self.start + (self.end - self.start) * progress


@dataclass
class MedicalMaskingCollator(DataCollatorForLanguageModeling):
    """Pads packed rows and masks them at the scheduled rate, medical tokens weighted by `medical_weight`.

    Examples hold `input_ids`, optional `term_flags` (0 other, 1 term start, 2 term continuation) and optional
    `doc_lengths` (packed documents). The batch holds `input_ids`, `labels` (-100 where not masked),
    `attention_mask`, `medical_mask` (0/1 per position), `mask_input` (1 where a labelled token became the mask
    token), for packed rows `position_ids` and `document_ids`, plus counters (`mask_stats`: maskable, medical
    maskable, masked, medical masked tokens; `stream_stats`) that `MLMTrainer` pops.

    Masking samples units: a medical term with `whole_term_masking` (all its tokens or none), a word with
    `whole_word_masking`, else a token. Special tokens, padding and de-identification placeholders (`___`) are never
    masked. Unit u of n_u tokens and weight
    w_u (`medical_weight` if it starts with a medical token, else 1) is masked with probability q_u = min(1, c·w_u),
    c solved per sequence (water-filling) so that sum_u q_u·n_u = p·N, N the sequence's maskable tokens: the expected
    masked fraction is the rate p whatever the weights, which only choose *which* tokens are masked. Masked tokens
    then become `[MASK]` / a random token / stay unchanged with `mask_replace_prob` / `random_replace_prob` / the rest.

    The rate p is `schedule(batches // accumulation)`: `batches` counts the training batches collated so far, in
    shared memory (collator copies in dataloader workers count together), and `MaskingScheduleCallback` sets
    `accumulation` (gradient accumulation steps) and, on resume, `batches = global_step * accumulation`. Without
    workers every micro-batch is masked at exactly the rate of the optimizer step it trains in, whatever the
    loader's look-ahead; with workers, batches collated ahead by the prefetch run up to `prefetch_factor *
    num_workers` batches early. Training batches carry `mask_step`, the optimizer step whose rate they were masked
    at. With a `seed`, training masks are a function of (seed, batch number) only, so a resumed run draws the masks
    an uninterrupted one would; without a schedule (evaluation) the rate is `mlm_probability` and the masks are drawn
    per document from (seed, the document's ids, position): with uniform masking (`medical_weight` 1, as
    `for_evaluation`) a document is masked the same way whatever the batch size, the number of
    processes or the documents packed beside it.
    """

    schedule: MaskingSchedule | None = None
    medical_weight: float = 3.0
    whole_term_masking: bool = True
    whole_word_masking: bool = False
    accumulation: int = 1
    batches: object = field(default=None, repr=False)

    def __post_init__(self):
        if not self.mlm:
            raise ValueError("MedicalMaskingCollator does masked language modeling only (mlm=True).")
        if self.return_tensors != "pt":
            raise ValueError(
                f"MedicalMaskingCollator returns PyTorch tensors only, got return_tensors={self.return_tensors!r}"
            )
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"The tokenizer {self.tokenizer.name_or_path!r} has no pad token, needed to pad batches.")
        if self.tokenizer.mask_token_id is None:
            raise ValueError(
                f"The tokenizer ({type(self.tokenizer).__name__}, {self.tokenizer.name_or_path!r}) has no mask token: "
                "masked language modeling needs one (e.g. [MASK])."
            )
        if not (self.medical_weight > 0 and math.isfinite(self.medical_weight)):
            raise ValueError(f"medical_weight must be a positive number, got {self.medical_weight}")
        if self.schedule is not None:
            self.mlm_probability = self.schedule.start
        self.mlm_probability = check_probability("mlm_probability", self.mlm_probability)
        if self.whole_word_mask:  # the parent's flag: honoured by our vectorised whole-word units, which keep 80/10/10
            self.whole_word_masking, self.whole_word_mask = True, False
        super().__post_init__()
        if self.batches is None:
            self.batches = mp.Value("q", 0)
        self._vocab_size = len(self.tokenizer)
        self._special = torch.zeros(self._vocab_size, dtype=torch.bool)
        self._special[self.tokenizer.all_special_ids] = True
        self._special[placeholder_ids(self.tokenizer)] = True  # never masked either: they carry no signal
        if self.whole_word_masking:
            self._continues_word, self._ends_in_punctuation = _word_tables(self.tokenizer)

    @classmethod
    def for_evaluation(cls, tokenizer, mlm_probability: float, seed: int) -> MedicalMaskingCollator:
        """Uniform token-level masking at a fixed rate and seed, so that every token is equally likely to count.

        Used by `recipes/evaluate_mlm.py` and by the pretraining run's own evaluation, so their numbers are comparable.
        """
        return cls(tokenizer=tokenizer, mlm_probability=mlm_probability, seed=seed, medical_weight=1.0,
                   whole_term_masking=False)

    @property
    def current_probability(self) -> float:
        """The masking rate of the next batch."""
        if self.schedule is None:
            return self.mlm_probability
        return self.schedule(self.batches.value // self.accumulation)

    def _claim_batch(self) -> int | None:
        """The number of this training batch (None in evaluation); counts it (atomically: workers share the counter)."""
        if self.schedule is None:
            return None
        with self.batches.get_lock():
            index = self.batches.value
            self.batches.value += 1
        return index

    def torch_call(self, examples: list) -> MaskedBatch:
        """Pad the examples (`rows.StreamRow`s, or plain lists of ids) into a masked batch."""
        rows = [e if isinstance(e, Mapping) else {INPUT_IDS: e} for e in examples]
        lengths = torch.tensor([len(r[INPUT_IDS]) for r in rows])
        seq_len = int(lengths.max())
        if self.pad_to_multiple_of:
            seq_len = -(-seq_len // self.pad_to_multiple_of) * self.pad_to_multiple_of
        present = torch.arange(seq_len) < lengths[:, None]
        batch_ids = torch.full(present.shape, self.tokenizer.pad_token_id, dtype=torch.long)
        total = int(lengths.sum())
        batch_ids[present] = _concatenated([r[INPUT_IDS] for r in rows], total)
        medical = torch.zeros_like(batch_ids)
        if TERM_FLAGS in rows[0]:
            medical[present] = _concatenated([r[TERM_FLAGS] for r in rows], total)
        batch = {"attention_mask": present.long()}
        if DOC_LENGTHS in rows[0]:
            batch[DOCUMENT_IDS], batch[POSITION_IDS] = document_tensors([r[DOC_LENGTHS] for r in rows], seq_len)
        if STREAM_STATS in rows[0]:
            batch[STREAM_STATS] = torch.tensor([r[STREAM_STATS] for r in rows], dtype=torch.long).sum(0)
        if STREAM_POSITION in rows[0]:
            batch[STREAM_POSITION] = torch.tensor([r[STREAM_POSITION] for r in rows], dtype=torch.long)
        index = self._claim_batch()
        rate = self.mlm_probability if index is None else self.schedule(index // self.accumulation)
        draws = self._document_draws(rows, batch_ids.shape) if index is None and self.seed is not None else None
        batch[INPUT_IDS], batch["labels"], batch[MASK_STATS] = self.mask_tokens(
            batch_ids, medical, rate, generator=self._generator_for(index), draws=draws
        )
        batch[MEDICAL_MASK] = (medical > 0).long()
        batch[MASK_INPUT] = ((batch[INPUT_IDS] == self.tokenizer.mask_token_id) & (batch["labels"] != -100)).long()
        if index is not None:
            batch[MASK_STEP] = torch.tensor(index // self.accumulation)
        return batch

    def _generator_for(self, index: int | None) -> torch.Generator | None:
        """In training, a generator seeded by (seed, batch number); None in evaluation (see `_document_draws`)."""
        if self.seed is None or index is None:
            return None
        return torch.Generator().manual_seed(xxhash.xxh64_intdigest(index.to_bytes(8, "little"), seed=self.seed))

    def _document_draws(self, rows: list[Mapping], shape: torch.Size) -> torch.Tensor:
        """Evaluation: 3 uniforms per position (masked?, how replaced, random id), a function of (seed, document,
        position in it) only, so a document is masked alike whatever the batch, the process or its row neighbours.

        A document is a row's span in `doc_lengths` (a packed document or a piece of a split one), else the row.
        """
        draws = torch.zeros(*shape, 3, dtype=torch.float64)
        for r, row in enumerate(rows):
            ids = np.asarray(row[INPUT_IDS], dtype=np.int64)
            start = 0
            for length in row.get(DOC_LENGTHS) or [len(ids)]:
                key = xxhash.xxh64_intdigest(ids[start : start + length].tobytes(), seed=self.seed)
                generator = torch.Generator().manual_seed(key)
                draws[r, start : start + length] = torch.rand(length, 3, generator=generator, dtype=torch.float64)
                start += length
        return draws

    def mask_tokens(
        self, input_ids: torch.Tensor, medical: torch.Tensor, rate: float | None = None, generator=None, draws=None
    ):
        """Mask `input_ids` (B, L) at `rate` (default: the current rate), `medical` (B, L) its 0/1/2 flags.

        The random numbers come from `generator`, or from `draws` (B, L, 3) uniforms per position: a unit is masked
        when the first of its first token is below its probability; the second and third choose the replacement.
        Returns (inputs, labels, mask_stats).
        """
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= self._vocab_size:
            raise ValueError(f"input_ids outside the tokenizer's vocabulary of {self._vocab_size} tokens")
        maskable = ~self._special[input_ids]
        is_medical = (medical > 0) & maskable
        starts = maskable & ~(self._continues_unit(input_ids, medical) & _previous(maskable, False))
        unit = torch.cumsum(starts.reshape(-1), 0) - 1  # unit of every token; -1 before the first unit
        unit_row = starts.nonzero(as_tuple=True)[0]
        unit_size = torch.bincount(unit[maskable.reshape(-1)], minlength=len(unit_row))
        unit_weight = torch.where(is_medical[starts], float(self.medical_weight), 1.0)
        rate = self.current_probability if rate is None else rate
        target = rate * maskable.sum(1, dtype=torch.float64)
        q = unit_probabilities(unit_size, unit_weight, unit_row, target)
        if draws is None:
            chosen = torch.rand(len(q), generator=generator, dtype=torch.float64) < q
        else:
            chosen = draws[..., 0][starts] < q
        chosen = torch.cat([chosen, chosen.new_zeros(1)])  # index -1: no unit
        masked = chosen[unit].reshape(input_ids.shape) & maskable

        labels = torch.where(masked, input_ids, -100)
        inputs = input_ids.clone()
        where = masked.nonzero(as_tuple=True)
        draw = torch.rand(len(where[0]), generator=generator) if draws is None else draws[..., 1][where].float()
        replaced = draw < self.mask_replace_prob
        randomized = ~replaced & (draw < self.mask_replace_prob + self.random_replace_prob)
        inputs[where[0][replaced], where[1][replaced]] = self.tokenizer.mask_token_id
        n_random = int(randomized.sum())
        inputs[where[0][randomized], where[1][randomized]] = (
            torch.randint(self._vocab_size, (n_random,), generator=generator) if draws is None
            else (draws[..., 2][where][randomized] * self._vocab_size).long()
        )
        stats = torch.stack([maskable.sum(), is_medical.sum(), masked.sum(), (masked & is_medical).sum()]).long()
        return inputs, labels, stats

    def _continues_unit(self, input_ids: torch.Tensor, medical: torch.Tensor) -> torch.Tensor:
        """True where a token belongs to the unit of the token before it (if that one is maskable)."""
        continues = torch.zeros_like(input_ids, dtype=torch.bool)
        if self.whole_word_masking:
            continues |= self._continues_word[input_ids] & ~_previous(self._ends_in_punctuation[input_ids], True)
        if self.whole_term_masking:
            continues = (continues & (medical != 1)) | (medical == 2)
        return continues


def unit_probabilities(
    size: torch.Tensor, weight: torch.Tensor, row: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Per-unit masking probabilities q_u = min(1, c_row·w_u) with sum_u q_u·n_u = target[row] (water-filling).

    `size` (n_u), `weight` (w_u) and `row` are per unit; `target` is per row (p·N). Units whose weight would push
    q above 1 are capped at 1 and the excess goes to the others: c only grows as units cap, so the loop ends after at
    most one pass per distinct weight, plus one.
    """
    size, weight = size.to(torch.float64), weight.to(torch.float64)
    capped = torch.zeros_like(weight, dtype=torch.bool)
    while True:
        free_mass = torch.zeros_like(target).index_add_(0, row, torch.where(capped, 0.0, weight * size))
        capped_tokens = torch.zeros_like(target).index_add_(0, row, torch.where(capped, size, 0.0))
        c = ((target - capped_tokens).clamp(min=0) / free_mass.clamp(min=1e-12))[row]
        now_capped = capped | (c * weight >= 1)
        if torch.equal(now_capped, capped):
            break
        capped = now_capped
    return torch.where(capped, 1.0, (c * weight).clamp(max=1.0))


def _concatenated(sequences: list, total: int) -> torch.Tensor:
    """Rows of `total` ids (lists, arrays or tensors) as one flat long tensor, converted in one call."""
    if isinstance(sequences[0], torch.Tensor):
        return torch.cat(sequences).long()
    return torch.from_numpy(np.fromiter(chain.from_iterable(sequences), np.int64, count=total))


def _previous(values: torch.Tensor, first: bool) -> torch.Tensor:
    """`values` shifted right by one position along the sequence; `first` fills position 0."""
    return torch.cat([torch.full_like(values[:, :1], first), values[:, :-1]], dim=1)


def placeholder_ids(tokenizer) -> list[int]:
    """Ids of the tokens whose text is only underscores (`_`, `___`, ` ___`): MIMIC's de-identification placeholders."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)
    return [i for i, text in enumerate(texts) if set(text.strip()) == {"_"}]


def _word_tables(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Over the vocabulary: does a token continue the word before it, does it end in punctuation.

    A token starting with whitespace or punctuation starts a word; so does the token after one ending in punctuation
    (e.g. "non", "-", "small" are three units).
    """
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)
    continues = [bool(p) and not (p[0].isspace() or _is_punctuation(p[0])) for p in pieces]
    ends = [bool(p) and _is_punctuation(p[-1]) for p in pieces]
    return torch.tensor(continues, dtype=torch.bool), torch.tensor(ends, dtype=torch.bool)


def _is_punctuation(char: str) -> bool:
    # U+FFFD: a piece of a multi-byte character (byte-level BPE), part of a word.
    return not (char.isalnum() or char.isspace() or char == "\ufffd")


class MaskingScheduleCallback(TrainerCallback):
    """Tells the collator the gradient accumulation and, on resume, how many batches the restored steps consumed."""

    def __init__(self, collator: MedicalMaskingCollator):
        self.collator = collator

    def on_train_begin(self, args, state, control, **kwargs):
        self.collator.accumulation = args.gradient_accumulation_steps
        self.collator.batches.value = state.global_step * args.gradient_accumulation_steps
