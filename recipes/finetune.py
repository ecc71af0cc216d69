"""Score a checkpoint on a downstream biomedical task: fine-tune once per seed, write mean ± std as JSON.

    python recipes/finetune.py --config recipes/configs/finetune_bc5cdr.yaml --model_name_or_path <checkpoint>
    python recipes/finetune.py --config recipes/configs/finetune_smoke.yaml --model_name_or_path <tiny checkpoint>
"""

import logging

from clinical_modernbert.cli import run_recipe
from clinical_modernbert.finetuning import FinetuneArguments, FinetuneTrainingArguments, finetune, results_path

logger = logging.getLogger(__name__)


def main(args, training_args):
    results = finetune(args, training_args)
    if training_args.process_index == 0:
        path = results_path(args, training_args)
        path.parent.mkdir(parents=True, exist_ok=True)
        results.save(path)
        summary = ", ".join(f"{name} {m['mean']:.4f} ± {m['std']:.4f}" for name, m in results.metrics.items())
        logger.info("Save: %s on %s over %d seed(s): %s -> %s", results.task, results.split, len(results.seeds),
                    summary, path)
    return results


if __name__ == "__main__":
    run_recipe(main, [FinetuneArguments, FinetuneTrainingArguments])
