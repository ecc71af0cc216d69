"""Files that ship with the package: the embedded sample corpus, tokenizer, tiny model config, lexicon and codes;
and the repository's model card template and Space, which the wheel ships too."""

from __future__ import annotations

import csv
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

ASSETS_DIR = Path(__file__).parent
EMBEDDED_CORPUS = ASSETS_DIR / "sample_corpus.jsonl.gz"
EMBEDDED_TOKENIZER_DIR = ASSETS_DIR / "tokenizer"
EMBEDDED_MODEL_CONFIG = ASSETS_DIR / "tiny_modernbert_config.json"
LEXICON_DIR = ASSETS_DIR / "lexicon"
CODES_DIR = ASSETS_DIR / "codes"
# Top-level folders of the repository and the subpackages the wheel ships them as (pyproject.toml's package-dir).
SHIPPED_FOLDERS = {"model_card": "clinical_modernbert.model_card_template", "space": "clinical_modernbert.space"}


def read_term_list(category: str) -> list[str]:
    """Terms of one embedded lexicon category (`drugs`, `diseases`, ...), comments skipped."""
    path = LEXICON_DIR / f"{category}.txt"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]


def read_code_table(name: str) -> list[tuple[str, str]]:
    """(code, description) rows of an embedded code table."""
    with open(CODES_DIR / name, encoding="utf-8", newline="") as f:
        return [(row["code"], row["description"]) for row in csv.DictReader(f, delimiter="\t")]


def shipped_folder(name: str) -> Traversable:
    """The repository's top-level folder `name` (`model_card` or `space`), wherever the package is loaded from.

    Installed from a wheel, it is the subpackage pyproject.toml maps the folder to. A source checkout (an editable
    install, or `src` on PYTHONPATH) has no such subpackage: there it is the folder beside `src/`.
    """
    try:
        return files(SHIPPED_FOLDERS[name])
    except ModuleNotFoundError:
        folder = ASSETS_DIR.resolve().parents[2] / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{name}/ is missing: the package is neither installed with it ({SHIPPED_FOLDERS[name]}) nor run from a "
            f"checkout that has {folder}. Reinstall clinical-modernbert (pip install .)."
        )
    return folder
