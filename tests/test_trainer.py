"""MLMTrainer: stream position saved with checkpoints, resumed runs continue with the next unseen rows."""

import json

import torch
from conftest import tiny_config
from transformers import ModernBertForMaskedLM, TrainerCallback

from clinical_modernbert.configs import DataArguments, PretrainTrainingArguments
from clinical_modernbert.data.stream import TrainingStream
from clinical_modernbert.masking import MaskingSchedule, MaskingScheduleCallback, MedicalMaskingCollator
from clinical_modernbert.trainer import STREAM_STATE_FILE, MLMTrainer


class RecordingTrainer(MLMTrainer):
    """Records, per training step, the unmasked token ids of the rows it trained on."""

    seen: list

    def _prepare_inputs(self, inputs):
        inputs = super()._prepare_inputs(inputs)
        if self.model.training:
            original = torch.where(inputs["labels"] == -100, inputs["input_ids"], inputs["labels"])
            self.seen.append((self.state.global_step, original.tolist()))
        return inputs


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def make_trainer(tmp_path, tokenizer, corpus, callbacks=(), **overrides):
    data_args = DataArguments(sources=[{"name": "c", "path": "json", "data_files": str(corpus)}],
                              max_seq_length=64, eval_fraction=0.0)
    values = dict(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=2, save_strategy="steps",
                  save_steps=3, report_to="none", logging_steps=1, seed=0, dataloader_pin_memory=False)
    values.update(overrides)
    args = PretrainTrainingArguments(**values)
    torch.manual_seed(0)
    collator = MedicalMaskingCollator(tokenizer=tokenizer, schedule=MaskingSchedule(0.3, 0.15, 6), seed=0)
    trainer = RecordingTrainer(
        model=ModernBertForMaskedLM(tiny_config(tokenizer)),
        args=args,
        train_dataset=TrainingStream(data_args, tokenizer, block_chars=800),
        data_collator=collator,
        callbacks=[MaskingScheduleCallback(collator), *callbacks],
    )
    trainer.seen = []
    return trainer


def write_corpus(path, n=200):
    path.write_text("".join(json.dumps({"text": f"note {i}: " + "aspirin given for pain. " * (1 + i % 7)}) + "\n"
                            for i in range(n)))
    return path


def test_resume_continues_with_the_rows_an_uninterrupted_run_would_see(tmp_path, embedded_tokenizer):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    full = make_trainer(tmp_path / "full", embedded_tokenizer, corpus, save_strategy="no")
    full.train()

    first = make_trainer(tmp_path / "run", embedded_tokenizer, corpus, callbacks=[StopAt(3)])
    first.train()
    checkpoint = tmp_path / "run" / "checkpoint-3"
    assert (checkpoint / STREAM_STATE_FILE.format(rank=0)).is_file()
    resumed = make_trainer(tmp_path / "run", embedded_tokenizer, corpus)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    assert [rows for _, rows in first.seen] == [rows for step, rows in full.seen if step < 3]
    assert [rows for _, rows in resumed.seen] == [rows for step, rows in full.seen if step >= 3]
    assert resumed.state.global_step == 6
    facts = resumed.corpus_facts()
    assert facts["tokens_trained"] == full.corpus_facts()["tokens_trained"]


def test_schedule_continues_after_resume(tmp_path, embedded_tokenizer):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    first = make_trainer(tmp_path / "run", embedded_tokenizer, corpus, callbacks=[StopAt(3)])
    first.train()
    resumed = make_trainer(tmp_path / "run", embedded_tokenizer, corpus)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    rates = {e["step"]: e["mlm_probability"] for e in resumed.state.log_history if "mlm_probability" in e}
    schedule = MaskingSchedule(0.3, 0.15, 6)
    assert all(abs(rates[step] - schedule(step - 1)) < 1e-4 for step in (4, 5, 6))  # rate of each step's batch
