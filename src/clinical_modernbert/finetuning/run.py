"""Fine-tune one checkpoint on one task per seed with `Trainer`, and summarise the scores as mean ± std."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    set_seed,
)

from ..artifacts import FINETUNE_RESULTS_FILE, FinetuneResult
from ..configs import FinetuneArguments, FinetuneTrainingArguments
from ..configs.finetuning import FINETUNE_SPLITS
from .classification import ClassificationTask
from .metrics import aggregate
from .ner import NerTask

logger = logging.getLogger(__name__)


def build_task(args: FinetuneArguments) -> NerTask | ClassificationTask:
    """Read and validate the three splits of the task (labels come from the training split)."""
    files = {split: args.split_file(split) for split in FINETUNE_SPLITS}
    limits = {"train": args.max_train_examples, "validation": args.max_eval_examples, "test": args.max_eval_examples}
    logger.info("Data: %s (%s) from %s", args.task_name, args.task_type, ", ".join(map(str, files.values())))
    if args.task_type == "ner":
        task = NerTask(files, limits)
    else:
        task = ClassificationTask(files, limits, args.text_field, args.label_field)
    logger.info("Data: %d labels: %s", len(task.labels), task.labels)
    return task


def load_tokenizer(args: FinetuneArguments, task: NerTask | ClassificationTask) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name_or_path or args.model_name_or_path)
    if tokenizer.pad_token is None:
        raise ValueError(f"Tokenizer of {args.model_name_or_path!r} has no pad token; padded batches need one.")
    return task.prepare_tokenizer(tokenizer)


def load_model(args: FinetuneArguments, task: NerTask | ClassificationTask) -> PreTrainedModel:
    """The checkpoint with a fresh task head; any other newly initialised weight is reported."""
    kwargs = {"attn_implementation": args.attn_implementation} if args.attn_implementation else {}
    model, info = task.model_class.from_pretrained(
        args.model_name_or_path,
        num_labels=len(task.labels),
        id2label=dict(enumerate(task.labels)),
        label2id={label: i for i, label in enumerate(task.labels)},
        output_loading_info=True,
        **kwargs,
    )
    new = sorted(set(info["missing_keys"]) | {key for key, *_ in info.get("mismatched_keys", [])})
    backbone = [key for key in new if not key.startswith("classifier.")]
    if backbone:
        logger.warning("Model: %d weight(s) besides the task head are newly initialised: %s", len(backbone), backbone)
    logger.info("Model: %s, %.1fM parameters, new task head of %d labels", args.model_name_or_path,
                model.num_parameters() / 1e6, len(task.labels))
    return model


def max_input_length(args: FinetuneArguments, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> int:
    """`args.max_length`, refused if the model or tokenizer cannot take inputs that long."""
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    limit = min(limit for limit in limits if limit)
    if args.max_length > limit:
        raise ValueError(
            f"max_length={args.max_length} exceeds the {limit} tokens {args.model_name_or_path!r} accepts; lower it "
            "(longer sequences are split into windows anyway)"
        )
    return args.max_length


def finetune(args: FinetuneArguments, training_args: FinetuneTrainingArguments) -> FinetuneResult:
    """Fine-tune a fresh copy of the checkpoint per seed, score `args.eval_split`, and return the results."""
    task = build_task(args)
    tokenizer = load_tokenizer(args, task)
    config = AutoConfig.from_pretrained(args.model_name_or_path)
    task.encode(tokenizer, max_input_length(args, config, tokenizer), args.stride)
    per_seed, train_losses = [], []
    for seed in args.seeds:
        set_seed(seed)  # before loading: the task head is initialised at random
        model = load_model(args, task)
        seed_dir = Path(training_args.output_dir) / f"seed-{seed}"
        trainer = Trainer(
            model=model,
            args=dataclasses.replace(training_args, seed=seed, output_dir=str(seed_dir)),
            train_dataset=task.encoded["train"].dataset,
            eval_dataset=task.encoded["validation"].dataset,
            data_collator=task.collator(tokenizer),
            processing_class=tokenizer,
        )
        length = (f"{training_args.max_steps} steps" if training_args.max_steps > 0
                  else f"{training_args.num_train_epochs:g} epochs")
        logger.info("Train: seed %d, %d windows, %s", seed, len(task.encoded["train"].dataset), length)
        train_result = trainer.train()
        logits = trainer.predict(task.encoded[args.eval_split].dataset).predictions
        metrics = task.score(args.eval_split, logits)
        logger.info("Eval: seed %d on %s: %s", seed, args.eval_split,
                    ", ".join(f"{name}={value:.4f}" for name, value in metrics.items()))
        per_seed.append(metrics)
        train_losses.append(train_result.training_loss)
        if args.save_models:
            trainer.save_model(str(seed_dir))
            logger.info("Save: seed %d model in %s", seed, seed_dir)
    return FinetuneResult(
        task=args.task_name,
        task_type=args.task_type,
        split=args.eval_split,
        data_file=str(task.data[args.eval_split].path),
        num_examples=task.num_examples(args.eval_split),
        checkpoint=args.model_name_or_path,
        labels=task.labels,
        seeds=list(args.seeds),
        metrics=aggregate(per_seed),
        train_loss=train_losses,
        data_notes=task.data_notes(args.eval_split),
        settings={
            "learning_rate": training_args.learning_rate,
            "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "max_length": args.max_length,
            "stride": args.stride,
            "max_train_examples": args.max_train_examples,
            "max_eval_examples": args.max_eval_examples,
        },
    )


def results_path(args: FinetuneArguments, training_args: FinetuneTrainingArguments) -> Path:
    """`args.results_file`, else `<output_dir>/finetune_results_<task>.json`."""
    return Path(args.results_file or Path(training_args.output_dir) / FINETUNE_RESULTS_FILE.format(task=args.task_name))
