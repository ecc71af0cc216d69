"""Arguments of `recipes/finetune.py`: the task and checkpoint here, the optimisation in `TrainingArguments`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments

from .checks import check_no_hub_token

TASK_TYPES = ("ner", "classification")
FINETUNE_SPLITS = ("train", "validation", "test")
# File names looked up in data_dir, per split and task type (first existing one wins).
SPLIT_FILE_STEMS = {"train": ("train",), "validation": ("dev", "devel", "validation", "valid"), "test": ("test",)}
TASK_FILE_SUFFIXES = {"ner": (".tsv", ".iob", ".txt"), "classification": (".jsonl",)}


@dataclass
class FinetuneArguments:
    """What to fine-tune and score: a checkpoint, a task (NER from IOB files or classification from JSONL), seeds."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local directory of any BERT-family checkpoint (required)."}
    )
    task_type: str | None = field(default=None, metadata={"help": f"One of {TASK_TYPES} (required)."})
    task_name: str | None = field(
        default=None, metadata={"help": "Name written in the results (default: the data_dir folder name)."}
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder with train / dev|devel / test files (.tsv IOB for ner, .jsonl for classification)."},
    )
    train_file: str | None = field(default=None, metadata={"help": "Training file (default: found in data_dir)."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation file (default: in data_dir)."})
    test_file: str | None = field(default=None, metadata={"help": "Test file (default: found in data_dir)."})
    eval_split: str = field(default="test", metadata={"help": "Split scored in the results: validation or test."})
    seeds: list[int] = field(default_factory=lambda: [42], metadata={"help": "One fine-tuning run per seed."})
    max_length: int = field(
        default=512, metadata={"help": "Tokens per input; longer sequences are split into overlapping windows."}
    )
    stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows of a long sequence."})
    max_train_examples: int | None = field(
        default=None, metadata={"help": "Keep the first N training sentences/examples (smoke runs)."}
    )
    max_eval_examples: int | None = field(
        default=None, metadata={"help": "Keep the first N validation and test sentences/examples (smoke runs)."}
    )
    text_field: str = field(default="text", metadata={"help": "Text field of classification JSONL rows."})
    label_field: str = field(default="label", metadata={"help": "Label field of classification JSONL rows."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Default: the checkpoint's."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention backend passed to from_pretrained (default: the model's)."}
    )
    results_file: str | None = field(
        default=None,
        metadata={"help": "Where the scores go (default: <output_dir>/finetune_results_<task_name>.json)."},
    )
    save_models: bool = field(default=False, metadata={"help": "Save each seed's model in <output_dir>/seed-<seed>."})

    def __post_init__(self):
        if not self.model_name_or_path:
            raise ValueError("model_name_or_path is required: the checkpoint to fine-tune.")
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {self.task_type!r}")
        if not (self.data_dir or self.train_file):
            raise ValueError("Give data_dir (with train/dev/test files) or train_file, validation_file and test_file.")
        if self.eval_split not in ("validation", "test"):
            raise ValueError(f"eval_split must be 'validation' or 'test', got {self.eval_split!r}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if not 0 <= self.stride < self.max_length:
            raise ValueError(f"stride must be in [0, max_length={self.max_length}), got {self.stride}")
        for name in ("max_train_examples", "max_eval_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 when set, got {getattr(self, name)}")
        self.task_name = self.task_name or (Path(self.data_dir).name if self.data_dir else Path(self.train_file).stem)

    def split_file(self, split: str) -> Path:
        """The file of `split`: the one given explicitly, else the first matching name in data_dir."""
        explicit = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}[split]
        if explicit:
            path = Path(explicit)
        elif self.data_dir:
            candidates = [
                Path(self.data_dir) / f"{stem}{suffix}"
                for stem in SPLIT_FILE_STEMS[split]
                for suffix in TASK_FILE_SUFFIXES[self.task_type]
            ]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                raise FileNotFoundError(
                    f"No {split} file in {self.data_dir}: looked for {', '.join(p.name for p in candidates)}"
                )
        else:
            raise ValueError(f"No {split} file: give data_dir or {split}_file.")
        if not path.is_file():
            raise FileNotFoundError(f"{split} file not found: {path}")
        return path


def check_stride(stride: int, window_tokens: int) -> None:
    """Refuse a stride that leaves a window no new tokens (`window_tokens` excludes special tokens)."""
    if not 0 <= stride < window_tokens:
        raise ValueError(
            f"stride={stride} must be in [0, {window_tokens}): windows hold {window_tokens} tokens besides special "
            "tokens; lower stride or raise max_length"
        )


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the usual fine-tuning defaults; checkpoints are not saved (scores are the output)."""

    output_dir: str = field(default="outputs/finetune", metadata={"help": "Where results (and models) go."})
    learning_rate: float = field(default=3e-5, metadata={"help": "Peak learning rate (2e-5 to 5e-5 is usual)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs per seed."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warmup steps, or a share of all steps if < 1."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpointing during training (default: none)."})

    def __post_init__(self):
        check_no_hub_token(self.hub_token)
        super().__post_init__()
