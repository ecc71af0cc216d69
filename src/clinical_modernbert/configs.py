"""Argument dataclasses of the recipes, parsed by `trl.TrlParser` from YAML with CLI overrides."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from .assets import ASSETS_DIR

EMBEDDED_PREFIX = "embedded:"
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flex_attention", "flash_attention_2")


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
        metadata={"help": f"One of {ATTENTION_IMPLEMENTATIONS}; auto = flash_attention_2 on CUDA if installed, else sdpa."},
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
    a Python format string over the row's columns (e.g. `"ICD-9 code {code}: {description}"`).
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

    def __post_init__(self):
        if not self.weight > 0:
            raise ValueError(f"Source {self.name!r}: mixture weight must be > 0, got {self.weight}")
        if isinstance(self.data_files, str):
            self.data_files = resolve_embedded(self.data_files)
        elif self.data_files is not None:
            self.data_files = [resolve_embedded(f) for f in self.data_files]


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
    shuffle_buffer_size: int = field(
        default=0, metadata={"help": "Stream shuffle buffer per source (0 = keep file order)."}
    )

    def __post_init__(self):
        self.sources = [s if isinstance(s, SourceConfig) else _source_from_dict(s) for s in self.sources]
        if not 8 <= self.max_seq_length <= 8192:
            raise ValueError(f"max_seq_length must be in [8, 8192], got {self.max_seq_length}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


def _source_from_dict(spec: dict) -> SourceConfig:
    valid = [f.name for f in fields(SourceConfig)]
    unknown = sorted(set(spec) - set(valid))
    if unknown:
        raise ValueError(f"Unknown source key(s) {unknown} in {spec}; valid keys: {valid}")
    return SourceConfig(**spec)


@dataclass
class MaskingArguments:
    """Medical-token-weighted dynamic masking (see `clinical_modernbert.masking`)."""

    mlm_probability_start: float = field(default=0.30, metadata={"help": "Masking rate at step 0."})
    mlm_probability_end: float = field(default=0.15, metadata={"help": "Masking rate at max_steps."})
    mlm_schedule: str = field(default="linear", metadata={"help": "linear, cosine or constant."})
    medical_weight: float = field(default=3.0, metadata={"help": "Relative masking weight of medical tokens."})
    whole_term_masking: bool = field(default=True, metadata={"help": "Mask multi-token medical terms as a unit."})
    whole_word_masking: bool = field(default=False, metadata={"help": "Mask ordinary words as a unit too."})
    mask_replace_prob: float = field(default=0.8, metadata={"help": "Share of masked tokens replaced by [MASK]."})
    random_replace_prob: float = field(default=0.1, metadata={"help": "Share of masked tokens replaced at random."})
    eval_mlm_probability: float = field(default=0.15, metadata={"help": "Fixed masking rate of evaluation."})
    lexicon_files: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra term lists (one term per line) added to the embedded default lexicon."},
    )
    code_tables: list[str] = field(
        default_factory=list, metadata={"help": "Extra code tables (TSV/CSV with a `code` column)."}
    )
    use_default_lexicon: bool = field(default=True, metadata={"help": "Include the embedded default lexicon."})


@dataclass
class PretrainConfig(TrainingArguments):
    """`TrainingArguments` with the recipe's defaults (streams need max_steps, no column removal)."""

    output_dir: str = field(default="outputs/clinical-modernbert-tiny", metadata={"help": "Where the run is saved."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator selects the columns."})
    batch_eval_metrics: bool = field(
        default=True, metadata={"help": "Feed the top-k metric batch by batch, so evaluation memory stays flat."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start fresh even if output_dir holds checkpoints (default: resume from the last one)."},
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
        super().__post_init__()
        if self.max_steps <= 0:
            raise ValueError("max_steps must be set (> 0): the corpus is a stream of unknown length.")


@dataclass
class PreparePubmedArguments:
    """`recipes/prepare_pubmed.py`: NCBI's PubMed XML files into Parquet shards (see `corpora.pubmed`)."""

    source: str | None = field(
        default=None,
        metadata={"help": "Folder or https URL of the baseline files: https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/"},
    )
    updates: str | None = field(
        default=None, metadata={"help": "Folder or URL of the update files after the baseline (.../updatefiles/)."}
    )
    output_dir: str = field(default="data/pubmed", metadata={"help": "Shards in data/, dataset card, parse cache."})
    num_proc: int = field(default=1, metadata={"help": "Files parsed in parallel (processes)."})
    max_files: int | None = field(default=None, metadata={"help": "Only the first N files (baseline, then updates)."})
    num_shards: int = field(
        default=64, metadata={"help": "Output Parquet shards; a multiple of the process count gives each whole shards."}
    )
    languages: list[str] = field(
        default_factory=lambda: ["eng"],
        metadata={"help": "Languages kept (PubMed's codes: eng, ger, fre, ...); `all` keeps every language."},
    )
    keep_without_abstract: bool = field(default=False, metadata={"help": "Keep citations that have only a title."})
    download_retries: int = field(default=3, metadata={"help": "Attempts per download (checked against NCBI's MD5)."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Upload the shards and card as this Hub dataset repository (namespace/name)."}
    )
    private: bool = field(default=True, metadata={"help": "Create the Hub dataset repository private."})

    def __post_init__(self):
        if not self.source:
            raise ValueError("--source is required: a folder or https URL of NCBI's PubMed baseline files, e.g. "
                             "https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/")
        for name in ("num_proc", "num_shards", "download_retries", "max_files"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")


@dataclass
class PrepareMimicArguments:
    """`recipes/prepare_mimic.py`: PhysioNet's MIMIC-IV-Note CSV files into local Parquet shards (never pushed)."""

    source: str | None = field(
        default=None, metadata={"help": "The MIMIC-IV-Note folder from PhysioNet (holding note/discharge.csv.gz, ...)."}
    )
    note_files: list[str] = field(
        default_factory=lambda: ["note/discharge.csv.gz", "note/radiology.csv.gz"],
        metadata={"help": "Note CSV files, relative to --source."},
    )
    output_dir: str = field(default="data/mimic-iv-note", metadata={"help": "Shards in data/ and a dataset card."})
    num_shards: int = field(default=64, metadata={"help": "Output Parquet shards (see prepare_pubmed)."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Refused: MIMIC-IV notes are credentialed data and never redistributed."}
    )

    def __post_init__(self):
        if self.push_to_hub:
            raise ValueError(
                f"--push_to_hub {self.push_to_hub} refused: MIMIC-IV-Note is credentialed data (PhysioNet Credentialed "
                "Health Data Use Agreement) and is never redistributed. Keep the prepared Parquet on this machine."
            )
        if not self.source:
            raise ValueError("--source is required: the MIMIC-IV-Note folder downloaded from "
                             "https://physionet.org/content/mimic-iv-note/ (it holds note/discharge.csv.gz)")
        if self.num_shards < 1:
            raise ValueError(f"--num_shards must be >= 1, got {self.num_shards}")
