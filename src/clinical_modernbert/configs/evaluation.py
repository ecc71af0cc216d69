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
    annotations: str | None = field(
        default=None,
        metadata={
            "help": "Documents with entity mentions: a PubTator file (PMID|t|title, PMID|a|abstract, then "
            "PMID<TAB>start<TAB>end<TAB>mention<TAB>type<TAB>id lines) or an IOB file (token<TAB>tag, as "
            "recipes/finetune.py reads). Evaluates these documents instead of `sources`, adding top-k inside vs "
            "outside mentions per entity type and whole-mention recovery."
        },
    )
    max_annotated_documents: int | None = field(
        default=None, metadata={"help": "Evaluate only the first this many annotated documents (default: all)."}
    )
    context_lengths: list[int] | None = field(
        default=None,
        metadata={
            "help": "Long-context probe, e.g. 512 1024 2048 4096 8192: the same masked positions near the end of "
            "long documents of `sources`, predicted with the preceding context cut to each length."
        },
    )
    probe_tokens: int = field(
        default=128,
        metadata={"help": "Long-context probe: the last this many tokens of each document hold the scored positions."},
    )
    max_probe_documents: int = field(
        default=64, metadata={"help": "Long-context probe: at most this many long documents."}
    )

    def __post_init__(self):
        if self.split not in EVALUATION_SPLITS:
            raise ValueError(f"split must be one of {EVALUATION_SPLITS}, got {self.split!r}")
        self.mlm_probability = check_probability("mlm_probability", self.mlm_probability)
        for name in ("per_device_eval_batch_size", "probe_tokens", "max_probe_documents"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_annotated_documents is not None and self.max_annotated_documents < 1:
            raise ValueError(f"max_annotated_documents must be >= 1 (or unset), got {self.max_annotated_documents}")
        if self.context_lengths is not None:
            lengths = self.context_lengths
            if not lengths or lengths != sorted(set(lengths)) or lengths[0] < self.probe_tokens + 2:
                raise ValueError(
                    f"context_lengths must be increasing lengths of at least probe_tokens + 2 = {self.probe_tokens + 2}"
                    f" (the scored tail plus [CLS] and [SEP]), e.g. 512 1024 2048 4096 8192; got {lengths}"
                )
