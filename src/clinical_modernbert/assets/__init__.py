"""Files that ship with the package: the embedded sample corpus, tokenizer, tiny model config, lexicon and codes."""

from __future__ import annotations

import csv
from pathlib import Path

ASSETS_DIR = Path(__file__).parent
EMBEDDED_CORPUS = ASSETS_DIR / "sample_corpus.jsonl.gz"
EMBEDDED_TOKENIZER_DIR = ASSETS_DIR / "tokenizer"
EMBEDDED_MODEL_CONFIG = ASSETS_DIR / "tiny_modernbert_config.json"
LEXICON_DIR = ASSETS_DIR / "lexicon"
CODES_DIR = ASSETS_DIR / "codes"


def read_term_list(category: str) -> list[str]:
    """Terms of one embedded lexicon category (`drugs`, `diseases`, ...), comments skipped."""
    path = LEXICON_DIR / f"{category}.txt"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]


def read_code_table(name: str) -> list[tuple[str, str]]:
    """(code, description) rows of an embedded code table."""
    with open(CODES_DIR / name, encoding="utf-8", newline="") as f:
        return [(row["code"], row["description"]) for row in csv.DictReader(f, delimiter="\t")]
