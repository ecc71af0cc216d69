"""Arguments of `recipes/pretrain.py`: the model, the data sources, training phases, masking and training."""

from __future__ import annotations

import math
import re
import string
from dataclasses import MISSING, asdict, dataclass, field, fields

from transformers import TrainingArguments

from ..assets import ASSETS_DIR
from .checks import check_no_hub_token, check_probability

EMBEDDED_PREFIX = "embedded:"
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flex_attention", "flash_attention_2")
MASKING_SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class ModelArguments:
    """Which model to train: a Hub id or local checkpoint (warm start), or a config (from scratch)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local directory of a ModernBERT checkpoint to warm-start from."},
    )
    model_config: str | None = field(
        default=None,
        metadata={"help": "ModernBertConfig JSON to train from scratch (default: the embedded tiny config)."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Tokenizer (default: the checkpoint's, else the embedded sample tokenizer)."},
    )
    attn_implementation: str = field(
        default="auto",
        metadata={
            "help": f"One of {ATTENTION_IMPLEMENTATIONS}; auto = flash_attention_2 on CUDA if installed, else sdpa."
        },
    )
    sparse_prediction: bool = field(
        default=False, metadata={"help": "Run the MLM head only on masked positions (ModernBERT's sparse_prediction)."}
    )

    def __post_init__(self):
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation={self.attn_implementation!r} is not one of {ATTENTION_IMPLEMENTATIONS}"
            )
        if self.model_name_or_path and self.model_config:
            raise ValueError("Give either model_name_or_path (warm start) or model_config (from scratch), not both.")


@dataclass
class SourceConfig:
    """One corpus of the mixture: a Hub dataset or local files, read with `datasets` in streaming mode.

    `path` is a Hub id (e.g. `my-org/pubmed`) or a `datasets` builder (`json`, `parquet`, `csv`, `text`) used with
    `data_files` (local paths or globs, compressed files allowed). Text comes from `text_field`, or from `template`,
    a Python format string over the row's columns (e.g. `"ICD-9 code {code}: {description}"`). `redistributable:
    false` marks text whose terms forbid sharing it (MIMIC notes): it is trained on, but never mined into a vocabulary
    that is published with the model (unless `include_non_redistributable_sources` is given to the vocabulary recipe).
    """

    name: str
    path: str
    data_files: str | list[str] | None = None
    config_name: str | None = None
    split: str = "train"
    text_field: str = "text"
    template: str | None = None
    weight: float = 1.0
    delimiter: str | None = None
    redistributable: bool = True

    def __post_init__(self):
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"Source {self.name!r}: mixture weight must be a finite number > 0, got {self.weight!r}")
        if self.template is not None:
            check_template(self.name, self.template)
        if isinstance(self.data_files, str):
            self.data_files = resolve_embedded(self.data_files)
        elif self.data_files is not None:
            self.data_files = [resolve_embedded(f) for f in self.data_files]


def check_template(source: str, template: str) -> None:
    """A ValueError naming the source unless `template` is a format string whose fields are all named columns
    (`{code}`, `{MedlineCitation[Article][ArticleTitle]}`): no positional `{}`, no attribute access, balanced braces."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(f"Source {source!r}: template {template!r} is not a valid format string ({err}); write "
                         "literal braces as {{ and }}") from None
    for name in names:
        column = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not column or column.isdigit() or "." in re.sub(r"\[[^\]]*\]", "", name):
            raise ValueError(f"Source {source!r}: template field {{{name}}} in {template!r} must name a column of "
                             "the rows, e.g. {description} or {record[title]} (no positional {} or .attribute)")
    if not names:
        raise ValueError(f"Source {source!r}: template {template!r} names no column, so every document would be "
                         "the same text; use fields like {description}")


def resolve_embedded(path: str) -> str:
    """`embedded:<name>` names a file shipped in the package's assets; other paths are returned unchanged."""
    if path.startswith(EMBEDDED_PREFIX):
        return str(ASSETS_DIR / path[len(EMBEDDED_PREFIX) :])
    return path


@dataclass
class DataArguments:
    """The training corpus: sources, mixture, held-out split, tokenization and packing."""

    sources: list[dict] = field(
        default_factory=list,
        metadata={"help": "List of sources (see SourceConfig): name, path, data_files, text_field|template, weight."},
    )
    max_seq_length: int = field(default=512, metadata={"help": "Packed sequence length (up to 8192)."})
    packing: bool = field(
        default=True, metadata={"help": "Pack documents into full rows (attention never crosses documents)."}
    )
    eval_fraction: float = field(
        default=0.01, metadata={"help": "Share of documents held out for evaluation, chosen by hash of the text."}
    )
    max_eval_documents: int = field(default=256, metadata={"help": "Number of held-out documents evaluated."})
    max_eval_tokens_per_document: int | None = field(
        default=None,
        metadata={"help": "A held-out document longer than this many tokens is cut to it in the evaluation set "
                  "(counted and logged), so max_eval_documents bounds its rows and tokens too. Default: four rows' "
                  "worth, 4 x (max_seq_length - 2)."},
    )
    shuffle_buffer_size: int = field(
        default=0, metadata={"help": "Stream shuffle buffer per source (0 = keep file order)."}
    )

    def __post_init__(self):
        self.sources = [
            s if isinstance(s, SourceConfig) else _from_dict(SourceConfig, s, "source") for s in self.sources
        ]
        check_seq_length("max_seq_length", self.max_seq_length)
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.max_eval_tokens_per_document is not None and self.max_eval_tokens_per_document < 1:
            raise ValueError(f"max_eval_tokens_per_document must be >= 1 (or unset), got "
                             f"{self.max_eval_tokens_per_document}")

    @property
    def eval_tokens_per_document(self) -> int:
        """The most tokens of one held-out document the evaluation set keeps."""
        return self.max_eval_tokens_per_document or 4 * (self.max_seq_length - 2)


def check_seq_length(name: str, value: int) -> None:
    if not 8 <= value <= 8192:
        raise ValueError(f"{name} must be in [8, 8192], got {value}")


def _from_dict(cls, spec: dict, kind: str):
    """`cls(**spec)`, or a ValueError naming the unknown keys and the valid ones."""
    if not isinstance(spec, dict):
        raise ValueError(f"Each {kind} must be a mapping of keys, got {spec!r}")
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(spec) - set(valid))
    if unknown:
        raise ValueError(f"Unknown {kind} key(s) {unknown} in {spec}; valid keys: {valid}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in spec]
    if missing:
        raise ValueError(f"The {kind} {spec} lacks the required key(s) {missing}; required: {required}")
    return cls(**spec)


@dataclass
class LexiconArguments:
    """The medical lexicon (see `clinical_modernbert.lexicon`): the embedded term lists plus the user's files."""

    lexicon_files: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra term lists (one term per line) added to the embedded default lexicon."},
    )
    code_tables: list[str] = field(
        default_factory=list, metadata={"help": "Extra code tables (TSV/CSV with a `code` column)."}
    )
    use_default_lexicon: bool = field(default=True, metadata={"help": "Include the embedded default lexicon."})


@dataclass
class MaskingArguments(LexiconArguments):
    """Medical-token-weighted dynamic masking (see `clinical_modernbert.masking`), checked when parsed."""

    mlm_probability_start: float = field(default=0.30, metadata={"help": "Masking rate at step 0."})
    mlm_probability_end: float = field(default=0.15, metadata={"help": "Masking rate at max_steps."})
    mlm_schedule: str = field(default="linear", metadata={"help": "linear, cosine or constant."})
    medical_weight: float = field(default=3.0, metadata={"help": "Relative masking weight of medical tokens."})
    whole_term_masking: bool = field(default=True, metadata={"help": "Mask multi-token medical terms as a unit."})
    whole_word_masking: bool = field(default=False, metadata={"help": "Mask ordinary words as a unit too."})
    mask_replace_prob: float = field(default=0.8, metadata={"help": "Share of masked tokens replaced by [MASK]."})
    random_replace_prob: float = field(default=0.1, metadata={"help": "Share of masked tokens replaced at random."})
    eval_mlm_probability: float = field(default=0.15, metadata={"help": "Fixed masking rate of evaluation."})

    def __post_init__(self):
        for name in ("mlm_probability_start", "mlm_probability_end", "eval_mlm_probability"):
            setattr(self, name, check_probability(name, getattr(self, name)))
        if self.mlm_schedule not in MASKING_SCHEDULES:
            raise ValueError(f"mlm_schedule must be one of {MASKING_SCHEDULES}, got {self.mlm_schedule!r}")
        if not (self.medical_weight > 0 and math.isfinite(self.medical_weight)):
            raise ValueError(f"medical_weight must be a positive number, got {self.medical_weight}")
        replaced = (self.mask_replace_prob, self.random_replace_prob)
        if not (all(0 <= p <= 1 for p in replaced) and sum(replaced) <= 1):
            raise ValueError(f"mask_replace_prob and random_replace_prob must be in [0, 1] and add up to at most 1, "
                             f"got {self.mask_replace_prob} and {self.random_replace_prob}")


@dataclass
class TrainingPhase:
    """One phase of a run (e.g. short rows, then long context): its row length, steps and batch shape.

    With `global_batch_size` (rows per optimizer step over all processes) the per-device batch and gradient
    accumulation follow from the process count (`per_device_train_batch_size` is then the most rows one device holds
    at once), so the token budget does not depend on how many machines run it. Unset keys keep the top-level values.
    """

    name: str
    max_seq_length: int
    max_steps: int
    global_batch_size: int | None = None
    per_device_train_batch_size: int | None = None
    per_device_eval_batch_size: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip() or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"Phase name must be a non-empty folder name (no '/'), got {self.name!r}")
        where = f"Phase {self.name!r}"
        check_seq_length(f"{where}: max_seq_length", self.max_seq_length)
        for key in ("max_steps", "global_batch_size", "per_device_train_batch_size", "per_device_eval_batch_size"):
            value = getattr(self, key)
            if (value is not None or key == "max_steps") and not (isinstance(value, int) and value > 0):
                raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")


@dataclass
class PretrainTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the recipe's defaults (streams need max_steps, no column removal)."""

    output_dir: str = field(default="outputs/clinical-modernbert-tiny", metadata={"help": "Where the run is saved."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator selects the columns."})
    batch_eval_metrics: bool = field(
        default=True, metadata={"help": "Feed the top-k metric batch by batch, so evaluation memory stays flat."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over: delete output_dir's checkpoints and run facts first (default: resume from the "
                  "newest complete checkpoint; a finished run is not run again)."},
    )

    phases: list[dict] = field(
        default_factory=list,
        metadata={"help": "Training phases run in order, each warm-starting from the last (see TrainingPhase): name, "
                  "max_seq_length, max_steps, optional global_batch_size and per-device batch sizes. Empty: one "
                  "phase of max_steps rows of max_seq_length."},
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "torch threads per process on the CPU (default: cores / processes; `accelerate launch` "
                  "otherwise leaves 1)."},
    )

    @property
    def global_batch_size(self) -> int:
        """Rows per optimizer step over all processes."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.world_size

    def __post_init__(self):
        check_no_hub_token(self.hub_token)
        super().__post_init__()
        # kept as plain dicts (validated, defaults filled): the Trainer writes its arguments out as JSON
        phases = [p if isinstance(p, TrainingPhase) else _from_dict(TrainingPhase, p, "phase") for p in self.phases]
        self.phases = [asdict(p) for p in phases]
        names = [p.name for p in phases]
        if len(set(names)) < len(names):
            raise ValueError(f"Phase names must be unique (each phase trains in output_dir/phase-<name>), got {names}")
        total = sum(p.max_steps for p in phases)
        if phases and self.max_steps > 0 and self.max_steps != total:
            raise ValueError(
                f"max_steps={self.max_steps} but the phases {names} add up to {total} steps: set max_steps to "
                f"{total} (or leave it out) or change the phases' max_steps."
            )
        if phases and self.max_steps <= 0:
            self.max_steps = total
        if self.max_steps <= 0:
            raise ValueError("max_steps must be set (> 0): the corpus is a stream of unknown length.")

