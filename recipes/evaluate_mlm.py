"""Top-k masked-token accuracy and perplexity of a saved model, at a fixed 15% masking with a fixed seed.

    python recipes/evaluate_mlm.py --config my_eval.yaml --model_name_or_path outputs/clinical-modernbert-tiny
    accelerate launch recipes/evaluate_mlm.py --config my_eval.yaml --model_name_or_path answerdotai/ModernBERT-base

The YAML holds `sources` (as in the pretraining configs) and optionally `split` (held_out | all), `max_seq_length`,
`eval_fraction`, `lexicon_files`. Counted positions: every position with a label (masked, replaced or kept).
With `--sparse_prediction true` the head runs on masked positions only: same numbers, far less memory per batch.
With `--annotations FILE` (PubTator or IOB) it evaluates those documents instead of `sources`, adding top-k inside vs
outside mentions per entity type and whole-mention recovery (`clinical_modernbert.entity_evaluation`).
"""

import logging

from accelerate import PartialState
from transformers import set_seed

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
from clinical_modernbert.masking import MedicalMaskingCollator
from clinical_modernbert.modeling import check_max_seq_length, load_model, load_tokenizer

logger = logging.getLogger(__name__)


def main(model_args, data_args, eval_args):
    if not model_args.model_name_or_path:
        raise ValueError("recipes/evaluate_mlm.py needs --model_name_or_path: a saved model directory or a Hub id.")
    check_max_seq_length(model_args, data_args.max_seq_length)
    set_seed(eval_args.seed)
    output = results_path(model_args.model_name_or_path, eval_args.output_json)
    tokenizer = load_tokenizer(model_args)
    if eval_args.annotations:  # the annotated documents, without the lexicon's breakdown (mentions replace it)
        entity_rows, lexicon = build_entity_rows(eval_args, tokenizer, data_args.max_seq_length), None
        dataset = entity_rows.dataset
    else:
        lexicon = build_eval_lexicon(eval_args)
        dataset = build_eval_dataset(data_args, eval_args, tokenizer, lexicon)
    collator = MedicalMaskingCollator.for_evaluation(tokenizer, eval_args.mlm_probability, eval_args.seed)
    model = load_model(model_args, tokenizer)

    results, top_k = evaluate_masked_lm(
        model, tokenizer, dataset, collator, eval_args, medical_breakdown=lexicon is not None,
        output_dir=str(output.parent),
    )
    if eval_args.annotations:
        entities = entity_figures(model, tokenizer, entity_rows, eval_args, top_k, str(output.parent))
    if not PartialState().is_main_process:
        return
    print(format_table(results, top_k))
    report = evaluation_report(model_args.model_name_or_path, data_args, eval_args, dataset, collator, top_k, results)
    if eval_args.annotations:
        print(format_entity_tables(entities, top_k))
        report.data = annotations_data(eval_args, entity_rows, data_args.max_seq_length)
        report.entities = entities
    output.parent.mkdir(parents=True, exist_ok=True)
    report.save(output)
    logger.info("Save: results in %s", output)


if __name__ == "__main__":
    run_recipe(main, [ModelArguments, DataArguments, EvaluationArguments])
