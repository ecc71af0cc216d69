"""Arguments of `recipes/prepare_pubmed.py` and `recipes/prepare_mimic.py` (see `clinical_modernbert.corpora`)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
