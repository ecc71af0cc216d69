"""Continued MLM pretraining of ModernBERT on biomedical and clinical text.

    accelerate launch recipes/pretrain.py                                   # embedded default: tiny model, CPU
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/pretrain.py \
        --config recipes/configs/clinical_modernbert_base.yaml             # the real run
"""

import logging
from pathlib import Path

from transformers import set_seed

from clinical_modernbert.artifacts import RUN_FACTS_FILE
from clinical_modernbert.checkpoints import resolve_checkpoint
from clinical_modernbert.cli import run_recipe
from clinical_modernbert.configs import DataArguments, MaskingArguments, ModelArguments, PretrainTrainingArguments
from clinical_modernbert.hub import claim_push_to_hub, push_model_dir
from clinical_modernbert.lexicon import Lexicon
from clinical_modernbert.masking import MaskingScheduleCallback
from clinical_modernbert.metrics.mlm_topk_metrics import MLMTopKMetrics
from clinical_modernbert.modeling import check_max_seq_length, load_model, load_tokenizer
from clinical_modernbert.phases import run_phases
from clinical_modernbert.pretraining import (
    build_collators,
    build_datasets,
    carry_vocabulary_report,
    log_realised_mixture,
    run_facts,
    set_cpu_threads,
)
from clinical_modernbert.trainer import MLMTrainer

logger = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "embedded_default.yaml"


def main(model_args, data_args, masking_args, training_args):
    longest = max([p["max_seq_length"] for p in training_args.phases] or [data_args.max_seq_length])
    check_max_seq_length(model_args, longest)
    publish = claim_push_to_hub(training_args)
    set_cpu_threads(training_args)
    run_phases(train_phase, model_args, data_args, masking_args, training_args)
    if publish and training_args.process_index == 0:
        push_model_dir(training_args.output_dir, training_args.hub_model_id,
                       private=bool(training_args.hub_private_repo), revision=training_args.hub_revision)


def train_phase(phase, model_args, data_args, masking_args, training_args):
    """One phase: a full training run in `training_args.output_dir`."""
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args)
    lexicon = Lexicon.from_args(masking_args)
    train_dataset, eval_dataset = build_datasets(data_args, tokenizer, lexicon, training_args)
    train_collator, eval_collator = build_collators(tokenizer, masking_args, training_args,
                                                    steps_before=phase.steps_before, total_steps=phase.total_steps)
    model = load_model(model_args, tokenizer)
    metrics = MLMTopKMetrics()

    trainer = MLMTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        processing_class=tokenizer,
        callbacks=[MaskingScheduleCallback(train_collator)],
        compute_metrics=metrics,
        preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics,
    )
    logger.info("Train: phase %s, %d steps, global batch %d rows of %d tokens", phase.name, training_args.max_steps,
                training_args.global_batch_size, data_args.max_seq_length)
    train_result = trainer.train(resume_from_checkpoint=resolve_checkpoint(training_args))
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    if eval_dataset is not None:
        logger.info("Eval: %d held-out rows at a fixed %.0f%% masking", len(eval_dataset),
                    100 * masking_args.eval_mlm_probability)
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)

    facts = run_facts(trainer, model_args, data_args, masking_args, lexicon, phase=phase.name)
    log_realised_mixture(facts)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if trainer.is_world_process_zero():
        carry_vocabulary_report(model_args, training_args.output_dir)
        facts.save(Path(training_args.output_dir) / RUN_FACTS_FILE)  # last: it marks the run finished
        logger.info("Save: model, tokenizer and run facts in %s", training_args.output_dir)
        logger.info(
            "Load it with: AutoModelForMaskedLM.from_pretrained(%r) or pipeline('fill-mask', model=%r)",
            training_args.output_dir, training_args.output_dir,
        )


if __name__ == "__main__":
    run_recipe(main, [ModelArguments, DataArguments, MaskingArguments, PretrainTrainingArguments],
               default_config=DEFAULT_CONFIG)
