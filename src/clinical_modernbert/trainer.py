"""`Trainer` for packed, streamed MLM: document-confined attention, stream checkpoints, masking and corpus facts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from accelerate.data_loader import DataLoaderShard
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from .attention import packed_attention_inputs
from .checkpoints import mark_complete, rotate_checkpoints, unmark
from .data.rows import DOCUMENT_IDS, MASK_INPUT, MASK_STATS, MASK_STEP, MEDICAL_MASK, STREAM_POSITION, STREAM_STATS
from .data.stream import STAT_FIELDS, TrainingStream

logger = logging.getLogger(__name__)

MASK_STAT_FIELDS = ("maskable", "medical_maskable", "masked", "medical_masked")
STREAM_STATE_FILE = "stream_state_rank{rank}.json"


class MLMTrainer(Trainer):
    """A `Trainer` that understands the batches of `MedicalMaskingCollator` over a `TrainingStream`.

    - pops `document_ids` and turns it into per-layer-type document masks (or flash varlen kwargs);
    - evaluates with `eval_data_collator` (fixed masking rate and seed), handing `(labels, medical_mask,
      mask_input)` to the metrics (see `metrics.mlm_topk_metrics.MLMTopKMetrics`);
    - totals the per-source stream counters and masking counters, logs the masking shares;
    - saves the stream position with each checkpoint, marks checkpoints complete, and restores it on resume.
    """

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator
        n_sources = self.train_dataset.n_sources if isinstance(self.train_dataset, TrainingStream) else 0
        self.stream_totals = torch.zeros(n_sources, len(STAT_FIELDS), dtype=torch.long)
        self.mask_totals = torch.zeros(len(MASK_STAT_FIELDS), dtype=torch.long)
        self._mask_since_log = torch.zeros(len(MASK_STAT_FIELDS), dtype=torch.long)
        self.tokens_seen = 0
        self._stream_position = None
        self._micro_batches_since_log, self._window_start_step = 0, 0
        self._mask_step = None

    # -- data ---------------------------------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        if not isinstance(self.train_dataset, TrainingStream):
            return super().get_train_dataloader()
        # The stream is already split per process (split_dataset_by_node); accelerate.prepare would shard it again,
        # so we hand accelerate's per-process loader the stream as it is.
        # device=None: the counters stay on the CPU; _prepare_inputs moves the model inputs
        return DataLoaderShard(
            self.train_dataset,
            device=None,
            batch_size=self.args.per_device_train_batch_size,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available(),
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor,
        )

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def _prepare_inputs(self, inputs: dict) -> dict:
        stream_stats = inputs.pop(STREAM_STATS, None)
        mask_stats = inputs.pop(MASK_STATS, None)
        position = inputs.pop(STREAM_POSITION, None)
        document_ids = inputs.pop(DOCUMENT_IDS, None)
        mask_step = inputs.pop(MASK_STEP, None)
        inputs.pop(MEDICAL_MASK, None)  # evaluation hands these two to the metrics in prediction_step
        inputs.pop(MASK_INPUT, None)
        if self.model.training:
            if not self._micro_batches_since_log:
                self._window_start_step = self.state.global_step
            self._micro_batches_since_log += 1
            if mask_step is not None:
                self._check_mask_step(int(mask_step))
            if stream_stats is not None:
                self.stream_totals += stream_stats.cpu()
            if mask_stats is not None:
                self.mask_totals += mask_stats.cpu()
                self._mask_since_log += mask_stats.cpu()
            if position is not None:
                self._stream_position = position[-1].tolist()
            self.tokens_seen += int(inputs["attention_mask"].sum())
        inputs = super()._prepare_inputs(inputs)
        if document_ids is not None and bool((document_ids.max(dim=1).values > 0).any()):
            config = self.accelerator.unwrap_model(self.model).config
            dtype = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else torch.float32
            inputs.update(packed_attention_inputs(config, document_ids.to(self.args.device), dtype=dtype))
        return inputs

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # the medical and mask flags travel as more label tensors, so they are padded and gathered like the labels
        flags = [inputs.pop(MEDICAL_MASK, None), inputs.pop(MASK_INPUT, None)]
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if flags[0] is None or labels is None:
            return loss, logits, labels
        return loss, logits, (labels, *(f.to(labels.device) for f in flags if f is not None))

    def _check_mask_step(self, mask_step: int) -> None:
        """Every micro-batch must be masked at the rate of the optimizer step it trains in (exact without workers)."""
        self._mask_step = mask_step
        if mask_step != self.state.global_step and self.args.dataloader_num_workers == 0:
            raise RuntimeError(f"A micro-batch masked for optimizer step {mask_step} trains in step "
                               f"{self.state.global_step}: the masking schedule lost count of the batches.")

    # -- logging ------------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and "loss" in logs:
            schedule = getattr(self.data_collator, "schedule", None)
            if schedule is not None and self._mask_step is not None:  # the rate the last micro-batch was masked at
                logs["mlm_probability"] = round(schedule(self._mask_step), 4)
            steps = self.state.global_step - self._window_start_step
            if steps > 0:
                logs["micro_batches_per_step"] = self._micro_batches_since_log / steps
            self._micro_batches_since_log = 0
            counts = self.accelerator.reduce(self._mask_since_log.to(self.args.device), reduction="sum").cpu()
            self._mask_since_log.zero_()
            maskable, medical_maskable, masked, medical_masked = counts.tolist()
            if maskable:
                logs["medical_share_maskable"] = round(medical_maskable / maskable, 4)
                logs["masked_fraction"] = round(masked / maskable, 4)
            if masked:
                logs["medical_share_masked"] = round(medical_masked / masked, 4)
        super().log(logs, start_time)

    def corpus_facts(self) -> dict:
        """Realised mixture and token counts of this run, summed over processes."""
        device = self.args.device
        stream = self.accelerator.reduce(self.stream_totals.to(device), reduction="sum").cpu()
        masks = self.accelerator.reduce(self.mask_totals.to(device), reduction="sum").cpu()
        tokens = int(self.accelerator.reduce(torch.tensor(self.tokens_seen, device=device), reduction="sum"))
        sources = self.train_dataset.sources if isinstance(self.train_dataset, TrainingStream) else []
        return {
            "tokens_trained": tokens,
            "sources": {s.name: dict(zip(STAT_FIELDS, map(int, row))) for s, row in zip(sources, stream)},
            "masking_counts": dict(zip(MASK_STAT_FIELDS, map(int, masks))),
        }

    # -- checkpoints --------------------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        """The Trainer's save, then every process's stream state; marked complete once all are written, and only
        then are older checkpoints rotated away (see `checkpoints`)."""
        run_dir = self._get_output_dir(trial)
        checkpoint = Path(run_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            unmark(checkpoint)  # a folder saved again (a rerun from an earlier checkpoint) is incomplete meanwhile
        # the Trainer rotates inside its save, before our files and the manifest exist: we rotate after them
        save_total_limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = save_total_limit
        if isinstance(self.train_dataset, TrainingStream):
            self._save_stream_state(checkpoint)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            mark_complete(checkpoint)
            rotate_checkpoints(run_dir, save_total_limit, keep=(checkpoint, self.state.best_model_checkpoint))

    def _save_stream_state(self, checkpoint: Path) -> None:
        state = {
            "world_size": self.args.world_size,  # each process's stream is its shard of the corpus
            "stream_totals": self.stream_totals.tolist(),
            "mask_totals": self.mask_totals.tolist(),
            "tokens_seen": self.tokens_seen,
        }
        if self.args.dataloader_num_workers > 0:
            logger.warning("Stream position not saved: it lives in dataloader workers (resume will re-read).")
        elif self._stream_position is not None:
            state["stream"] = self.train_dataset.state_dict(self._stream_position)
        checkpoint.mkdir(parents=True, exist_ok=True)
        (checkpoint / STREAM_STATE_FILE.format(rank=self.args.process_index)).write_text(json.dumps(state))

    def _load_stream_state(self, checkpoint: Path) -> None:
        path = checkpoint / STREAM_STATE_FILE.format(rank=self.args.process_index)
        fix = "Resume with the processes that saved it, or pass --overwrite_output_dir true."
        if not path.is_file():
            raise ValueError(f"{path} is missing: {checkpoint} was saved by fewer processes, or without the stream. "
                             + fix)
        state = json.loads(path.read_text())
        saved_by = state.get("world_size", self.args.world_size)  # older stream states did not record it
        if saved_by != self.args.world_size:
            raise ValueError(f"{checkpoint} was saved by {saved_by} processes, this run has {self.args.world_size}. "
                             + fix)
        self.stream_totals = torch.tensor(state["stream_totals"], dtype=torch.long)
        self.mask_totals = torch.tensor(state["mask_totals"], dtype=torch.long)
        self.tokens_seen = state["tokens_seen"]
        if "stream" in state:
            self.train_dataset.load_state_dict(state["stream"])
            self.args.ignore_data_skip = True
            logger.info("Data: stream continues after its saved position in %s", checkpoint)
        else:
            logger.warning("Data: %s has no stream position; re-reading the stream to skip seen batches", path)

    def train(self, resume_from_checkpoint=None, **kwargs):
        if not resume_from_checkpoint:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        checkpoint = Path(resume_from_checkpoint)
        if isinstance(self.train_dataset, TrainingStream):
            self._load_stream_state(checkpoint)
        state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE_NAME))
        if state.global_step < self.args.max_steps:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        # the Trainer would train one step past max_steps: take the checkpoint as the trained model instead
        self._load_from_checkpoint(str(checkpoint))
        self.state = state
        logger.info("Train: %s holds step %d of max_steps %d; nothing left to train", checkpoint, state.global_step,
                    self.args.max_steps)
        return TrainOutput(state.global_step, 0.0, {})

