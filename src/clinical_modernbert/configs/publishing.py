"""Arguments of `recipes/push_to_hub.py`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .checks import check_repo_id


@dataclass
class PushArguments:
    """What `recipes/push_to_hub.py` publishes: a model directory, the Space demo, or both."""

    model_dir: str | None = field(default=None, metadata={"help": "Trained model directory (recipes/pretrain.py)."})
    repo_id: str | None = field(
        default=None, metadata={"help": "Model repo `namespace/name`: uploaded to, and served by the Space."}
    )
    space_id: str | None = field(default=None, metadata={"help": "Also publish the Gradio demo to this Space."})
    private: bool = field(default=False, metadata={"help": "Create the repo(s) private."})
    revision: str | None = field(default=None, metadata={"help": "Branch of the model repo (created if needed)."})
    dry_run: bool = field(default=False, metadata={"help": "Print the file list and the card; upload nothing."})
    license: str = field(default="apache-2.0", metadata={"help": "License id in the card's metadata."})
    language: str = field(default="en", metadata={"help": "Language code in the card's metadata."})

    def __post_init__(self):
        if not self.model_dir and not self.space_id:
            raise ValueError("Nothing to publish: give --model_dir (with --repo_id) and/or --space_id.")
        check_repo_id(self.repo_id)
        if self.space_id:
            check_repo_id(self.space_id, "space_id")
