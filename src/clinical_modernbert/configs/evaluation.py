"""Arguments of `recipes/evaluate_mlm.py`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..artifacts import MLM_EVAL_FILE
from .checks import check_probability
from .pretraining import LexiconArguments

EVALUATION_SPLITS = ("held_out", "all")


@dataclass
class EvaluationArguments(LexiconArguments):
    """What `recipes/evaluate_mlm.py` measures and where it writes it (model: `ModelArguments`; text:
    `DataArguments`); the lexicon gives the medical/other breakdown."""

    output_json: str | None = field(
        default=None,
        metadata={"help": f"Result file (default: {MLM_EVAL_FILE} in the model directory, or here for a Hub id)."},
    )
    split: str = field(
        default="held_out",
        metadata={
            "help": "held_out: the documents pretraining held out of `sources` (eval_fraction, max_eval_documents); "
            "all: every document of `sources` (a separate evaluation set)."
        },
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Fixed share of tokens masked (uniformly)."})
    seed: int = field(default=42, metadata={"help": "Seed of the masking: same seed, same masked positions."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Rows per forward pass."})
    top_k: list[int] | None = field(
        default=None, metadata={"help": "The k of top-k accuracy (default: the metric's 1 5 10 25)."}
    )
    bf16: bool = field(default=False, metadata={"help": "Evaluate under bf16 autocast (GPU)."})

    def __post_init__(self):
        if self.split not in EVALUATION_SPLITS:
            raise ValueError(f"split must be one of {EVALUATION_SPLITS}, got {self.split!r}")
        self.mlm_probability = check_probability("mlm_probability", self.mlm_probability)
        if self.per_device_eval_batch_size < 1:
            raise ValueError(f"per_device_eval_batch_size must be >= 1, got {self.per_device_eval_batch_size}")
