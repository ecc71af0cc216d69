"""PubMed from NCBI's baseline (and update) files into Parquet shards that `datasets` streams, locally or from the Hub.

    python recipes/prepare_pubmed.py --config recipes/configs/prepare_pubmed.yaml          # NCBI's 2026 baseline
    python recipes/prepare_pubmed.py --source <folder or URL> [--updates <folder or URL>] --output_dir data/pubmed \
        [--num_proc N] [--max_files N] [--push_to_hub my-org/pubmed-abstracts [--private true]]

A rerun skips the files already parsed (same MD5). The token for `--push_to_hub` comes from HF_TOKEN or
`hf auth login` and is never written.
"""

import logging

from clinical_modernbert.cli import run_recipe
from clinical_modernbert.configs import PreparePubmedArguments
from clinical_modernbert.corpora.pubmed import prepare_pubmed
from clinical_modernbert.corpora.shards import push_dataset_dir

logger = logging.getLogger(__name__)


def main(args: PreparePubmedArguments) -> dict:
    summary = prepare_pubmed(args)
    logger.info("Save: %s citations from %d files in %s", f"{summary['counts']['written']:,}",
                len(summary["baseline_files"]) + len(summary["update_files"]), args.output_dir)
    if args.push_to_hub:
        push_dataset_dir(args.output_dir, args.push_to_hub, private=args.private)
    return summary


if __name__ == "__main__":
    run_recipe(main, [PreparePubmedArguments])
