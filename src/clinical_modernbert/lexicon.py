"""Medical lexicon: term lists and code patterns, matched on word boundaries, turned into per-token flags.

Flags per token: 0 = not medical, 1 = first token of a medical term, 2 = continuation of the same term. They are
computed once in the data stream (from the fast tokenizer's offsets) and travel with each example, so the collator
stays vectorised.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import ahocorasick

from .assets import LEXICON_DIR

DEFAULT_CATEGORIES = ("drugs", "diseases", "procedures", "anatomy", "abbreviations")

# ICD-9-CM (250.00, V58.61, E849.7), ICD-10-CM (E11.9, I48.91, U07.1; dotted), CPT (5 digits) after a code keyword.
CODE_PATTERNS = {
    "icd9": r"\b(?:\d{3}\.\d{1,2}|V\d{2}(?:\.\d{1,2})?|E\d{3}(?:\.\d)?)\b",
    "icd10": r"\b[A-TV-Z]\d[0-9AB](?:\.[0-9A-Z]{1,4})?\b",
    "cpt": r"(?<=CPT )\d{4}[0-9A-Z]\b",
}
# A code token alone is ambiguous ("100.5 mg"); code patterns only count next to a coding-system keyword.
CODE_CONTEXT = re.compile(r"\b(?:ICD|ICD-9|ICD-10|ICD-9-CM|ICD-10-CM|CPT|code|codes|diagnosis|dx)\b", re.IGNORECASE)
WORD_CHAR = re.compile(r"\w")


class Lexicon:
    """A set of medical terms (case-insensitive, whole words) plus medical code patterns."""

    def __init__(self, terms: Iterable[str], match_codes: bool = True):
        self.terms = sorted({t.strip().lower() for t in terms if t.strip()})
        if not self.terms:
            raise ValueError("The medical lexicon is empty.")
        self._automaton = ahocorasick.Automaton()
        for term in self.terms:
            self._automaton.add_word(term, len(term))
        self._automaton.make_automaton()
        self.code_regex = re.compile("|".join(CODE_PATTERNS.values())) if match_codes else None

    def __len__(self) -> int:
        return len(self.terms)

    @classmethod
    def from_files(
        cls, term_files: Sequence[str] = (), code_tables: Sequence[str] = (), use_default: bool = True
    ) -> "Lexicon":
        """The embedded lexicon (optional) plus user term lists (one per line) and code tables (TSV/CSV, `code`)."""
        terms: list[str] = []
        paths = [LEXICON_DIR / f"{c}.txt" for c in DEFAULT_CATEGORIES] if use_default else []
        for path in [*paths, *map(Path, term_files)]:
            terms.extend(_read_terms(path))
        for path in map(Path, code_tables):
            terms.extend(_read_codes(path))
        return cls(terms)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of medical terms and codes in `text`, longest match first, not overlapping."""
        lowered = text.lower()
        found = []
        for end, length in self._automaton.iter(lowered):
            start = end - length + 1
            if (start == 0 or not WORD_CHAR.match(lowered[start - 1])) and (
                end + 1 == len(lowered) or not WORD_CHAR.match(lowered[end + 1])
            ):
                found.append((start, end + 1))
        if self.code_regex is not None and CODE_CONTEXT.search(text):
            found.extend(m.span() for m in self.code_regex.finditer(text))
        found.sort(key=lambda s: (s[0], -s[1]))
        spans, last_end = [], -1
        for start, end in found:
            if start >= last_end:
                spans.append((start, end))
                last_end = end
        return spans

    def token_flags(self, texts: Sequence[str], offsets: Sequence[Sequence[tuple[int, int]]]) -> list[list[int]]:
        """Per-token flags (0 other, 1 term start, 2 term continuation) from fast-tokenizer offsets."""
        return [_flags_for(self.spans(text), offs) for text, offs in zip(texts, offsets)]


def _flags_for(spans: list[tuple[int, int]], offsets: Sequence[tuple[int, int]]) -> list[int]:
    flags = [0] * len(offsets)
    s, previous = 0, -1
    for i, (start, end) in enumerate(offsets):
        while s < len(spans) and spans[s][1] <= start:
            s += 1
        if s < len(spans) and end > start and end > spans[s][0]:
            flags[i] = 2 if previous == s else 1
            previous = s
    return flags


def _read_terms(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"Lexicon file not found: {path}")
    terms = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    terms = [t for t in terms if t and not t.startswith("#")]
    if not terms:
        raise ValueError(f"Lexicon file is empty: {path}")
    return terms


def _read_codes(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"Code table not found: {path}")
    with open(path, encoding="utf-8", newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        reader = csv.DictReader(f, delimiter="\t" if "\t" in sample else ",")
        if reader.fieldnames is None or "code" not in reader.fieldnames:
            raise ValueError(f"Code table {path} needs a `code` column; found {reader.fieldnames}")
        codes = [row["code"] for row in reader if row["code"]]
    if not codes:
        raise ValueError(f"Code table is empty: {path}")
    return codes
