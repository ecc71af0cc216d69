"""Top-k masked-token accuracy and perplexity of a saved model, at a fixed 15% masking with a fixed seed.

    python recipes/evaluate_mlm.py --config my_eval.yaml --model_name_or_path outputs/clinical-modernbert-tiny
    accelerate launch recipes/evaluate_mlm.py --config my_eval.yaml --model_name_or_path answerdotai/ModernBERT-base

The YAML holds `sources` (as in the pretraining configs) and optionally `split` (held_out | all), `max_seq_length`,
`eval_fraction`, `lexicon_files`. Counted positions: every position with a label (masked, replaced or kept).
With `--sparse_prediction true` the head runs on masked positions only: same numbers, far less memory per batch.
`--annotations FILE` (PubTator or IOB) adds top-k inside vs outside entity mentions per type and whole-mention
recovery (`entities`); without `sources`, the annotated documents are the evaluated text.
`--context_lengths 512 1024 2048 4096 8192` adds the long-context probe on the documents of `sources`
(`long_context`): top-k per context length in the results file, the plot in long_context.png beside it.
"""

import logging

from accelerate import PartialState
from transformers import set_seed

from clinical_modernbert.artifacts import LONG_CONTEXT_PLOT_FILE
from clinical_modernbert.cli import run_recipe
from clinical_modernbert.configs import DataArguments, EvaluationArguments, ModelArguments
from clinical_modernbert.entity_evaluation import (
    annotations_data,
    build_entity_rows,
    entity_figures,
    format_entity_tables,
)
from clinical_modernbert.evaluation import (
    build_eval_dataset,
    build_eval_lexicon,
    evaluate_masked_lm,
    evaluation_report,
    format_table,
    results_path,
)
from clinical_modernbert.long_context import format_long_context_table, run_long_context_probe
from clinical_modernbert.masking import MedicalMaskingCollator
from clinical_modernbert.modeling import check_max_seq_length, load_model, load_tokenizer
from clinical_modernbert.plots import plot_long_context

logger = logging.getLogger(__name__)


def main(model_args, data_args, eval_args):
    check_inputs(model_args, data_args, eval_args)
    set_seed(eval_args.seed)
    output = results_path(model_args.model_name_or_path, eval_args.output_json)
    tokenizer = load_tokenizer(model_args)
    entity_rows = build_entity_rows(eval_args, tokenizer, data_args.max_seq_length) if eval_args.annotations else None
    if data_args.sources:
        lexicon = build_eval_lexicon(eval_args)
        dataset = build_eval_dataset(data_args, eval_args, tokenizer, lexicon)
    else:  # the annotated documents, without the lexicon's breakdown (their mentions give the entity figures)
        lexicon, dataset = None, entity_rows.dataset
    collator = MedicalMaskingCollator.for_evaluation(tokenizer, eval_args.mlm_probability, eval_args.seed)
    model = load_model(model_args, tokenizer)

    results, top_k = evaluate_masked_lm(
        model, tokenizer, dataset, collator, eval_args, medical_breakdown=lexicon is not None,
        output_dir=str(output.parent),
    )
    entities = entity_rows and entity_figures(model, tokenizer, entity_rows, eval_args, top_k, str(output.parent))
    long_context = (run_long_context_probe(model, tokenizer, data_args, eval_args, str(output.parent))
                    if eval_args.context_lengths else None)
    if not PartialState().is_main_process:
        return
    print(format_table(results, top_k))
    report = evaluation_report(model_args.model_name_or_path, data_args, eval_args, dataset, collator, top_k, results)
    if not data_args.sources:
        report.data = annotations_data(entity_rows, data_args.max_seq_length)
    output.parent.mkdir(parents=True, exist_ok=True)
    if entities:
        print(format_entity_tables(entities, top_k))
        report.entities = entities
    if long_context:
        print(format_long_context_table(long_context))
        report.long_context = long_context
        (output.parent / LONG_CONTEXT_PLOT_FILE).write_bytes(plot_long_context(long_context))
        logger.info("Save: long-context plot in %s", output.parent / LONG_CONTEXT_PLOT_FILE)
    report.save(output)
    logger.info("Save: results in %s", output)


def check_inputs(model_args, data_args, eval_args) -> None:
    """What can be checked before anything is read: a model, something to evaluate, lengths the model has."""
    if not model_args.model_name_or_path:
        raise ValueError("recipes/evaluate_mlm.py needs --model_name_or_path: a saved model directory or a Hub id.")
    if not (data_args.sources or eval_args.annotations):
        raise ValueError("Nothing to evaluate: give `sources` in a --config YAML, or --annotations FILE.")
    if eval_args.context_lengths and not data_args.sources:
        raise ValueError("--context_lengths probes long documents of `sources`: give them in a --config YAML.")
    check_max_seq_length(model_args, data_args.max_seq_length)
    if eval_args.context_lengths:
        check_max_seq_length(model_args, eval_args.context_lengths[-1], "context_lengths")


if __name__ == "__main__":
    run_recipe(main, [ModelArguments, DataArguments, EvaluationArguments])
