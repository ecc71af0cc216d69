"""Publish a trained model (generated card, allow-listed files, one commit) and/or the Gradio demo Space.

    python recipes/push_to_hub.py --model_dir outputs/clinical-modernbert-tiny --repo_id my-org/cmb-tiny --dry-run
    python recipes/push_to_hub.py --model_dir outputs/clinical-modernbert-tiny --repo_id my-org/cmb-tiny
    python recipes/push_to_hub.py --repo_id my-org/cmb-tiny --space_id my-org/cmb-demo

The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT points the upload at another Hub.
"""

import logging

from clinical_modernbert.cli import run_recipe
from clinical_modernbert.configs import PushArguments
from clinical_modernbert.hub import push_model_dir, push_space

logger = logging.getLogger(__name__)


def main(args: PushArguments):
    if args.model_dir:
        logger.info("Card: rendering the model card of %s", args.model_dir)
        push_model_dir(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
                       dry_run=args.dry_run, license=args.license, language=args.language)
    if args.space_id:
        logger.info("Save: publishing the demo Space %s (serving %s)", args.space_id, args.repo_id)
        push_space(args.space_id, args.repo_id, private=args.private, dry_run=args.dry_run)


if __name__ == "__main__":
    run_recipe(main, [PushArguments])
