"""MIMIC-IV-Note (PhysioNet, credentialed) into local Parquet shards of `note_id`, `note_type`, `text`.

    python recipes/prepare_mimic.py --source /data/mimic-iv-note/2.2 --output_dir data/mimic-iv-note

Reads `note/discharge.csv.gz` and `note/radiology.csv.gz` (`--note_files` to change). The prepared folder never
leaves this machine: `--push_to_hub` is refused.
"""

import logging

from clinical_modernbert.cli import run_recipe
from clinical_modernbert.configs import PrepareMimicArguments
from clinical_modernbert.corpora.mimic import prepare_mimic

logger = logging.getLogger(__name__)


def main(args: PrepareMimicArguments) -> dict:
    summary = prepare_mimic(args)
    logger.info("Save: %s notes in %s (credentialed: keep it on this machine)",
                f"{sum(summary['notes'].values()):,}", args.output_dir)
    return summary


if __name__ == "__main__":
    run_recipe(main, [PrepareMimicArguments])
