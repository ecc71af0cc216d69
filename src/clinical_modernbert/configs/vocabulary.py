"""Arguments of `recipes/extend_tokenizer.py`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .pretraining import DataArguments, SourceConfig, resolve_embedded

VOCABULARY_MODES = ("extend", "scratch")
# k-anonymity-style floor: a word form seen in fewer than k distinct documents can point at one patient (a surname, a
# rare place); 20 is above the small cell sizes (10-11) that health-data release rules suppress, and a word that common
# is still a corpus word rather than a person's. The words worth a token are far more common than that.
DEFAULT_MIN_DOCUMENT_FREQUENCY = 20


@dataclass
class VocabularyArguments:
    """Arguments of `recipes/extend_tokenizer.py`."""

    mode: str = field(
        default="extend", metadata={"help": f"One of {VOCABULARY_MODES}: add tokens to a base, or train anew."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "extend: the ModernBERT checkpoint whose embeddings are grown."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Base tokenizer (default: the checkpoint's); in scratch mode the baseline of the report."},
    )
    sources: list[dict] = field(
        default_factory=list,
        metadata={"help": "Domain corpus, as `sources` of recipes/pretrain.py (name, path, data_files, text_field)."},
    )
    lexicon_files: list[str] = field(
        default_factory=list,
        metadata={"help": "Term lists (one per line, `embedded:lexicon/drugs.txt` allowed): candidates; fertility "
                  "is measured on each."},
    )
    num_new_tokens: int = field(default=1000, metadata={"help": "extend: number of word forms to add."})
    vocab_size: int = field(default=32768, metadata={"help": "scratch: vocabulary size of the new tokenizer."})
    min_frequency: int = field(default=2, metadata={"help": "scratch: least frequency of a BPE merge."})
    heldout_fraction: float = field(
        default=0.05, metadata={"help": "Share of documents (by text hash) kept out of mining, for the report."}
    )
    max_documents: int = field(default=100_000, metadata={"help": "Documents read per source at most."})
    min_document_frequency: int = field(
        default=DEFAULT_MIN_DOCUMENT_FREQUENCY,
        metadata={"help": "A mined word must occur in at least this many distinct documents (identical texts count "
                  "once), so that no word of a single patient's notes (a name) enters the published tokenizer."},
    )
    include_non_redistributable_sources: bool = field(
        default=False,
        metadata={"help": "Also mine sources marked `redistributable: false` (e.g. MIMIC notes), whose words would be "
                  "published with the tokenizer. Off by default."},
    )
    output_dir: str = field(default="outputs/modernbert-domain-vocab", metadata={"help": "Where the result is saved."})

    def __post_init__(self):
        if self.mode not in VOCABULARY_MODES:
            raise ValueError(f"mode must be one of {VOCABULARY_MODES}, got {self.mode!r}")
        if self.mode == "extend" and not self.model_name_or_path:
            raise ValueError("mode=extend needs model_name_or_path: the checkpoint whose embeddings are grown.")
        if self.num_new_tokens <= 0:
            raise ValueError(f"num_new_tokens must be > 0, got {self.num_new_tokens}")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.max_documents <= 0:
            raise ValueError(f"max_documents must be > 0, got {self.max_documents}")
        if not self.sources and (self.mode == "scratch" or not self.lexicon_files):
            raise ValueError("No corpus: give `sources` (and, in extend mode, optionally `lexicon_files`).")
        if self.min_document_frequency < 1:
            raise ValueError(f"min_document_frequency must be >= 1, got {self.min_document_frequency}")
        self.sources = DataArguments(sources=self.sources).sources
        self.lexicon_files = [resolve_embedded(f) for f in self.lexicon_files]
        if self.sources and not self.mined_sources and (self.mode == "scratch" or not self.lexicon_files):
            raise ValueError(
                f"No corpus to mine: every source ({', '.join(s.name for s in self.sources)}) is marked "
                "redistributable: false. Add a redistributable source, or set include_non_redistributable_sources: "
                "true to publish words mined from them."
            )

    @property
    def mined_sources(self) -> list[SourceConfig]:
        """The sources whose words may enter the vocabulary: redistributable ones, others only when opted in."""
        return [s for s in self.sources if s.redistributable or self.include_non_redistributable_sources]
