"""`vocabulary_report.json` (`recipes/extend_tokenizer.py`): tokens added, fertility before/after, the mining's
privacy rules; carried into the output of a pretraining run that starts from the extended tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import JsonArtifact, check, is_count, is_number


@dataclass
class VocabularyReport(JsonArtifact):
    tokens_added: int
    fertility: dict[str, dict[str, float]]  # tokens per word, per text set and lexicon: {before, after}
    single_token_share: dict[str, dict[str, float]] | None = None  # per lexicon: share of terms that are one token
    mode: str | None = None  # extend | scratch
    base_tokenizer: str | None = None
    vocab_size: dict[str, int] | None = None  # {before, after}
    embedding_rows: int | None = None
    skipped: dict[str, int] | None = None  # candidate words not added, by reason
    mining: dict | None = None  # documents, min_document_frequency, sources_mined, sources_excluded, ...
    counts: dict[str, dict] | None = None  # what the fertility was measured on

    @classmethod
    def problems(cls, data: dict) -> list[str]:
        problems = []
        check(problems, data, "tokens_added", is_count, "a non-negative integer")
        check(problems, data, "fertility", lambda v: isinstance(v, dict) and v, "a non-empty object")
        check(problems, data, "single_token_share", lambda v: isinstance(v, dict), "an object", required=False)
        for section in ("fertility", "single_token_share"):
            entries = data.get(section)
            for name, pair in entries.items() if isinstance(entries, dict) else ():
                if not (isinstance(pair, dict) and is_number(pair.get("after"))
                        and ("before" not in pair or is_number(pair["before"]))):
                    problems.append(f"{section}.{name} must hold a number 'after' (and 'before'), got {pair!r}")
        mining = data.get("mining", {})
        if not isinstance(mining, dict):
            problems.append(f"'mining' must be an object, got {mining!r}")
        else:
            check(problems, mining, "min_document_frequency", lambda v: is_count(v) and v >= 1,
                  "a positive integer", required=False)
            for key in ("sources_mined", "sources_excluded"):
                check(problems, mining, key, lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
                      "a list of source names", required=False)
        return problems
