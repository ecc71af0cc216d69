"""Medical lexicon: term lists and code patterns, matched on word boundaries, turned into per-token flags.

Flags per token: 0 = not medical, 1 = first token of a medical term, 2 = continuation of the same term. They are
computed once in the data stream and travel with each example, so the collator stays vectorised.

Matching rules:
- terms match case-insensitively on word boundaries; punctuation and spaces are equivalent ("crohn's disease" matches
  "Crohn's disease" and "crohn s disease"); leftmost-longest: the longest match wins, matches never overlap;
- English function words ("and", "the", "with": general spell-check lists contain them) and terms without a letter
  are not terms;
- codes (the built-in ICD-9-CM / ICD-10-CM / CPT patterns, and the codes of user code tables) count only within
  `CODE_WINDOW` characters after a coding keyword ("ICD-10 code E11.9", "Diagnosis: 250.00"): a bare number is
  ambiguous ("430 patients", "100.5 mg"). Code-description lines should therefore name the coding system, as the
  recipe's templates do ("ICD-9 code {code}: {description}").
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

import ahocorasick
import xxhash

from .assets import LEXICON_DIR

if TYPE_CHECKING:  # the Space ships this module without tokenization.py
    from .tokenization import DocumentEncoder

logger = logging.getLogger(__name__)

DEFAULT_CATEGORIES = ("drugs", "diseases", "procedures", "anatomy", "abbreviations")

# ICD-9-CM (250.00, V58.61, E849.7), ICD-10-CM (E11.9, I48.91, U07.1), CPT (5 characters after "CPT ").
CODE_PATTERNS = {
    "icd9": r"\b(?:\d{3}\.\d{1,2}|V\d{2}(?:\.\d{1,2})?|E\d{3}(?:\.\d)?)\b",
    "icd10": r"\b[A-TV-Z]\d[0-9AB](?:\.[0-9A-Z]{1,4})?\b",
    "cpt": r"(?<=CPT )\d{4}[0-9A-Z]\b",
}
CODE_KEYWORDS = ("icd", "icd-9", "icd-10", "icd-9-cm", "icd-10-cm", "cpt", "hcpcs", "code", "codes", "diagnosis",
                 "diagnoses", "dx")
CODE_WINDOW = 128
_LONGEST_CODE = 8
STOPWORDS = frozenset({
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do",
    "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he",
    "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once",
    "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some",
    "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "up", "us", "very", "was", "we", "were", "what", "when",
    "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself",
    "yourselves",
})

_TERM, _CODE, _KEYWORD = 1, 2, 4
_ASCII_BOUNDARIES = str.maketrans({chr(c): " " for c in range(128) if not (chr(c).isalnum() or chr(c) == "_")})
_NON_WORD = re.compile(r"\W")
_LETTER = re.compile(r"[^\W\d_]")


def normalize(text: str) -> str:
    """Lower-case `text` and turn every non-word character into a space, keeping its length (and offsets)."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters lower-case to two ("İ")
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return lowered.translate(_ASCII_BOUNDARIES) if lowered.isascii() else _NON_WORD.sub(" ", lowered)


class Lexicon:
    """Medical terms (case-insensitive, whole words) plus medical codes found after a coding keyword.

    `terms`: words or phrases; `codes`: code strings from code tables (e.g. `250.00`, `E11.9`); `match_codes`: also
    find codes (the built-in patterns and `codes`) in coding context. All matching is one Aho-Corasick pass.
    """

    def __init__(self, terms: Iterable[str], codes: Iterable[str] = (), match_codes: bool = True):
        codes = list(codes)
        if codes and not match_codes:
            raise ValueError("Code tables were given but match_codes=False.")
        self._automaton = ahocorasick.Automaton()
        self.n_terms = self._add(terms, _TERM, lambda key: _LETTER.search(key) and key not in STOPWORDS)
        self.n_codes = self._add(codes, _CODE, bool)
        if not self.n_terms + self.n_codes:
            raise ValueError("The medical lexicon is empty (no term with a letter that is not a function word).")
        self.code_regex = re.compile("|".join(CODE_PATTERNS.values())) if match_codes else None
        if match_codes:
            self._add(CODE_KEYWORDS, _KEYWORD, bool)
        self._automaton.make_automaton()

    def _add(self, entries: Iterable[str], kind: int, keep) -> int:
        added = 0
        for entry in entries:
            key = normalize(entry).strip()
            if not keep(key):
                continue
            padded = f" {key} "  # value: padded length << 3 | kind bits (a key may be a term and a keyword)
            value = self._automaton.get(padded, len(padded) << 3)
            added += not value & kind
            self._automaton.add_word(padded, value | kind)
        return added

    def __len__(self) -> int:
        return self.n_terms + self.n_codes

    @classmethod
    def from_files(
        cls, term_files: Sequence[str] = (), code_tables: Sequence[str] = (), use_default: bool = True
    ) -> Lexicon:
        """The embedded lexicon (optional) plus user term lists (one per line) and code tables (TSV/CSV, `code`)."""
        terms: list[str] = []
        paths = [LEXICON_DIR / f"{c}.txt" for c in DEFAULT_CATEGORIES] if use_default else []
        for path in [*paths, *map(Path, term_files)]:
            terms.extend(read_terms(path))
        codes = [code for path in map(Path, code_tables) for code in _read_codes(path)]
        return cls(terms, codes)

    @classmethod
    def from_args(cls, args) -> Lexicon:
        """`from_files` with the `lexicon_files`, `code_tables` and `use_default_lexicon` of a recipe's arguments."""
        lexicon = cls.from_files(args.lexicon_files, args.code_tables, use_default=args.use_default_lexicon)
        logger.info("Data: medical lexicon of %d terms", len(lexicon))
        return lexicon

    def fingerprint(self) -> str:
        """A digest of what the lexicon matches: flags computed with an equal fingerprint are the same."""
        rules = repr((sorted(self._automaton.items()), self.code_regex and self.code_regex.pattern, CODE_WINDOW))
        return xxhash.xxh64_hexdigest(rules.encode())

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans `[start, end)` of medical terms and codes in `text`: leftmost-longest, never overlapping."""
        matches, keyword_ends = [], []
        # The automaton holds " key " and runs over " text ", so every match is bounded by non-word characters; a
        # match ending at `end` of padded length n covers text[end - n + 1 : end - 1]. Matches come in order of end.
        for end, value in self._automaton.iter(f" {normalize(text)} "):
            start = end - (value >> 3) + 1
            if value & _TERM or (value & _CODE and keyword_ends and 0 <= start - keyword_ends[-1] <= CODE_WINDOW):
                matches.append((start, end - 1))
            if value & _KEYWORD:
                keyword_ends.append(end - 1)
        if keyword_ends and self.code_regex is not None:
            codes = list(self._pattern_codes(text, keyword_ends))
            if codes:
                matches = sorted(matches + codes, key=itemgetter(1))
        return _leftmost_longest(matches)

    def _pattern_codes(self, text: str, keyword_ends: list[int]):
        """Code-pattern matches starting within `CODE_WINDOW` characters after a keyword (windows merged)."""
        windows: list[list[int]] = []
        for end in keyword_ends:
            if windows and end <= windows[-1][1]:
                windows[-1][1] = end + CODE_WINDOW
            else:
                windows.append([end, end + CODE_WINDOW])
        for begin, last_start in windows:
            for match in self.code_regex.finditer(text, begin, last_start + _LONGEST_CODE + 1):
                if match.start() <= last_start:
                    yield match.span()

    def tokenize(self, encoder: DocumentEncoder, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids of `texts` (no special tokens) and their flags (0 other, 1 term start, 2 term continuation).

        A token is flagged when it holds a character of a term.
        """
        encodings = encoder(texts)
        return [e.ids for e in encodings], self.flags(texts, encodings)

    def flags(self, texts: Sequence[str], encodings: Sequence) -> list[list[int]]:
        """The flags of `tokenize` from `texts` and their encodings (`DocumentEncoder` output)."""
        return [_flags_for(self.spans(t), e) for t, e in zip(texts, encodings)]


def _leftmost_longest(matches: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Of spans in order of end: the longest at the leftmost start, then the same after it (one pass, no sort).

    A span replaces the kept spans it contains unless it overlaps the kept span before them, which starts earlier.
    """
    kept: list[tuple[int, int]] = []
    for start, end in matches:
        k = len(kept)
        while k and kept[k - 1][0] >= start:
            k -= 1
        if not k or kept[k - 1][1] <= start:
            del kept[k:]
            kept.append((start, end))
    return kept


def _flags_for(spans: list[tuple[int, int]], encoding) -> list[int]:
    flags, char_to_token = [0] * len(encoding), encoding.char_to_token
    for start, stop in spans:
        first, last = char_to_token(start), char_to_token(stop - 1)
        if first is None or last is None:
            continue
        if not flags[first]:  # else the token also holds the previous term: the two terms merge
            flags[first] = 1
        if last > first:
            flags[first + 1 : last + 1] = [2] * (last - first)
    return flags


def read_terms(path: Path) -> list[str]:
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
        codes = [row["code"].strip() for row in reader if row["code"] and row["code"].strip()]
    if not codes:
        raise ValueError(f"Code table is empty: {path}")
    return codes
