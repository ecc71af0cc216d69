"""The building blocks `recipes/pretrain.py` assembles: data, collators, run facts."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
import xxhash
from datasets import Dataset

from .artifacts import EVAL_SET_DIR, EVAL_SET_FINGERPRINT_FILE, VOCABULARY_REPORT_FILE, RunFacts
from .configs import DataArguments, MaskingArguments, ModelArguments, PretrainTrainingArguments
from .data.rows import DOC_LENGTHS, INPUT_IDS, StreamRow
from .data.sources import local_files
from .data.stream import EvaluationRows, TrainingStream, materialise
from .lexicon import Lexicon
from .masking import MaskingSchedule, MedicalMaskingCollator, check_probability

logger = logging.getLogger(__name__)



def build_datasets(data_args: DataArguments, tokenizer, lexicon: Lexicon, args: PretrainTrainingArguments):
    """The training stream (this process's shard) and the held-out evaluation rows (materialised once)."""
    train = TrainingStream(
        data_args,
        tokenizer,
        lexicon,
        seed=args.seed,
        rank=args.process_index,
        world_size=args.world_size,
    )
    eval_dataset = None
    if data_args.eval_fraction > 0 and data_args.max_eval_documents > 0:
        eval_dataset = build_eval_set(data_args, tokenizer, lexicon, args)
    names = ", ".join(f"{s.name} (weight {s.weight:g})" for s in data_args.sources)
    logger.info("Data: streaming %s, rows of %d tokens, packing=%s", names, data_args.max_seq_length, data_args.packing)
    return train, eval_dataset


def build_eval_set(
    data_args: DataArguments, tokenizer, lexicon: Lexicon | None, args: PretrainTrainingArguments
) -> Dataset:
    """The held-out evaluation rows, streamed once and kept in `output_dir/eval_set`.

    Finding `max_eval_documents` held-out documents can mean reading millions (at `eval_fraction` 0.001), so the
    main process builds and saves them first; the other processes, and later runs in the same output directory with
    the same data, tokenizer, lexicon and seed, load them (a fingerprint of those is saved alongside; with
    `save_on_each_node` every node builds its own). `overwrite_output_dir` rebuilds them.
    """
    path = Path(args.output_dir) / EVAL_SET_DIR
    fingerprint = eval_set_fingerprint(data_args, tokenizer, lexicon, args.seed)
    with args.main_process_first(local=args.save_on_each_node, desc="building the evaluation set"):
        saved = path / EVAL_SET_FINGERPRINT_FILE
        reuse = saved.is_file() and saved.read_text() == fingerprint
        if reuse and not (args.should_save and args.overwrite_output_dir):
            eval_dataset = Dataset.load_from_disk(str(path))
            logger.info("Data: %d evaluation rows loaded from %s", len(eval_dataset), path)
            return eval_dataset
        stream = EvaluationRows(data_args, tokenizer, lexicon, seed=args.seed)
        eval_dataset = materialise(stream)
        if eval_dataset is None:
            raise ValueError(
                f"No document was held out for evaluation (eval_fraction={data_args.eval_fraction}): the sources "
                f"{[s.name for s in data_args.sources]} gave no non-empty text under it. Check each source's "
                "text_field or template against its rows, raise eval_fraction, or set max_eval_documents: 0."
            )
        counts = stream.eval_counts
        logger.info("Data: %d held-out documents in %d evaluation rows of up to %d tokens; %d document(s) longer than "
                    "max_eval_tokens_per_document=%d cut to it (%d tokens left out)", counts["documents"],
                    len(eval_dataset), data_args.max_seq_length, counts["cut"], data_args.eval_tokens_per_document,
                    counts["tokens_cut"])
        if args.should_save:
            staging = path.with_name(path.name + ".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            eval_dataset.save_to_disk(str(staging))
            (staging / EVAL_SET_FINGERPRINT_FILE).write_text(fingerprint)  # written last: a partial save never matches
            shutil.rmtree(path, ignore_errors=True)
            staging.rename(path)
            logger.info("Data: evaluation rows saved to %s", path)
    return eval_dataset


def eval_set_fingerprint(data_args: DataArguments, tokenizer, lexicon: Lexicon | None, seed: int) -> str:
    """A digest of everything the evaluation rows depend on (local files by path, size and modification time)."""
    vocabulary = json.loads(tokenizer.backend_tokenizer.to_str())
    for per_call in ("truncation", "padding"):  # set by every call, not part of what the tokenizer produces
        vocabulary.pop(per_call, None)
    files = [(path, os.stat(path).st_size, os.stat(path).st_mtime_ns)
             for source in data_args.sources for path in local_files(source)]
    settings = {"data": asdict(data_args), "files": files, "seed": seed, "tokenizer": vocabulary,
                "row_keys": list(StreamRow.__annotations__)}  # a set saved with other column names is rebuilt
    parts = (json.dumps(settings, sort_keys=True, default=str), lexicon.fingerprint() if lexicon else "no lexicon")
    return xxhash.xxh64_hexdigest("\0".join(parts).encode())


def build_collators(tokenizer, masking_args: MaskingArguments, args: PretrainTrainingArguments, steps_before: int = 0,
                    total_steps: int | None = None):
    """The training collator (scheduled, weighted rate) and the evaluation collator (uniform fixed rate and seed).

    The masking schedule runs over `total_steps` (default `max_steps`); this run's steps are those after
    `steps_before` (a phase of a longer run, see `phases.py`).
    """
    common = dict(
        tokenizer=tokenizer,
        medical_weight=masking_args.medical_weight,
        whole_term_masking=masking_args.whole_term_masking,
        whole_word_masking=masking_args.whole_word_masking,
        mask_replace_prob=masking_args.mask_replace_prob,
        random_replace_prob=masking_args.random_replace_prob,
    )
    schedule = MaskingSchedule(
        masking_args.mlm_probability_start, masking_args.mlm_probability_end, total_steps or args.max_steps,
        masking_args.mlm_schedule, offset=steps_before,
    )
    # one seed per process, or every rank would draw the same masks
    train = MedicalMaskingCollator(schedule=schedule, seed=args.seed + args.process_index, **common)
    eval_probability = check_probability("eval_mlm_probability", masking_args.eval_mlm_probability)
    return train, MedicalMaskingCollator.for_evaluation(tokenizer, eval_probability, args.seed)


def set_cpu_threads(args: PretrainTrainingArguments) -> None:
    """On the CPU, use the cores: `accelerate launch` sets OMP_NUM_THREADS=1 unless told otherwise."""
    if args.device.type == "cpu":
        torch.set_num_threads(args.cpu_threads or max(1, (os.cpu_count() or 1) // args.world_size))
        logger.info("Train: %d CPU threads per process", torch.get_num_threads())


def run_facts(trainer, model_args: ModelArguments, data_args: DataArguments, masking_args: MaskingArguments, lexicon,
              phase: str) -> RunFacts:
    """Everything the model card reports about this run (the phase named `phase`), measured by the run itself."""
    args, config = trainer.args, trainer.model.config
    corpus = trainer.corpus_facts()
    return RunFacts(
        base_model=model_args.model_name_or_path,
        from_scratch_config=None if model_args.model_name_or_path else (model_args.model_config or "embedded"),
        steps=trainer.state.global_step,
        global_batch_size=args.global_batch_size,
        max_seq_length=data_args.max_seq_length,
        packing=data_args.packing,
        attn_implementation=config._attn_implementation,
        precision="bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        learning_rate=args.learning_rate,
        source_weights={s.name: s.weight for s in data_args.sources},
        source_paths={s.name: s.path for s in data_args.sources},
        masking={
            "schedule": masking_args.mlm_schedule,
            "mlm_probability_start": masking_args.mlm_probability_start,
            "mlm_probability_end": masking_args.mlm_probability_end,
            "eval_mlm_probability": masking_args.eval_mlm_probability,
            "eval_seed": args.seed,
            "medical_weight": masking_args.medical_weight,
            "whole_term_masking": masking_args.whole_term_masking,
            "lexicon_terms": len(lexicon),
        },
        **corpus,
        held_out=held_out_facts(trainer.eval_dataset),
        phases=[{"name": phase, "steps": trainer.state.global_step, "max_seq_length": data_args.max_seq_length,
                 "global_batch_size": args.global_batch_size, "tokens_trained": corpus["tokens_trained"]}],
        log_history=trainer.state.log_history,
    )


def held_out_facts(eval_dataset: Dataset | None) -> dict | None:
    """The size of the held-out evaluation rows (None when the run held none out), for the model card."""
    if eval_dataset is None:
        return None
    return {
        "documents": sum(map(len, eval_dataset[DOC_LENGTHS])),
        "rows": len(eval_dataset),
        "tokens": sum(map(len, eval_dataset[INPUT_IDS])),
    }


def carry_vocabulary_report(model_args: ModelArguments, output_dir: str) -> None:
    """Copy the warm-start checkpoint's vocabulary report (recipes/extend_tokenizer.py) next to the new model."""
    for source in (model_args.model_name_or_path, model_args.tokenizer_name_or_path):
        report = Path(source or "") / VOCABULARY_REPORT_FILE
        if source and report.is_file():
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            shutil.copy(report, Path(output_dir) / VOCABULARY_REPORT_FILE)
            return


def log_realised_mixture(facts: RunFacts) -> None:
    """One log line per source: documents and tokens the run actually read (the card reports the same)."""
    total = sum(s["tokens"] for s in facts.sources.values()) or 1
    for name, counts in facts.sources.items():
        skipped = counts["skipped_empty"] + counts["skipped_non_string"]
        logger.info("Data: %s gave %d documents, %d tokens (%.1f%%), %d skipped, %d with replaced bytes",
                    name, counts["documents"], counts["tokens"], 100 * counts["tokens"] / total, skipped,
                    counts["utf8_replaced"])
