"""Fertility of ModernBERT's tokenizer before and after domain vocabulary refinement, on real biomedical text.

    python benchmarks/vocabulary_fertility.py            # needs ../shared (real tokenizer, PubMed, DrugBank, MeSH)

Word forms are mined from PubMed/OHSUMED abstracts (documents held out by text hash are never mined) and, in the
"+ lexicon" rows, from the DrugBank and MeSH term lists too, lowercased as drug and disease names run in text (each
term counts once; the lexicon figures of those rows are then in-sample). Fertility = tokens per whitespace word on the
held-out abstracts and on clinical notes (MTSamples, never mined: out of domain for the mining), tokens per
single-word term (" term", as in running text) on the lexicons, as listed (capitalised) and lowercased. The "scratch"
row is an in-domain byte-level BPE of ModernBERT's size trained on the mining documents. Prints a table and writes
`benchmarks/results/vocabulary_fertility.json`.
"""

import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import tokenizers
import transformers
from transformers import AutoTokenizer

from clinical_modernbert.configs import SourceConfig
from clinical_modernbert.lexicon import read_terms
from clinical_modernbert.logging_setup import setup_logging
from clinical_modernbert.parsing import parse_recipe_args
from clinical_modernbert.tokenizer_training import train_bpe_tokenizer
from clinical_modernbert.vocabulary import extend_tokenizer, fertility_report, mine_candidates, read_corpus

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


@dataclass
class BenchmarkArguments:
    shared: str = field(default=os.environ.get("CLINICAL_MODERNBERT_SHARED", str(REPO.parent / "shared")))
    corpus: str = "data/corpus/pubmed_ohsumed.jsonl"
    lexicons: list[str] = field(
        default_factory=lambda: ["data/lexicon/drug_names_drugbank.txt", "data/lexicon/mesh_descriptors.txt"]
    )
    notes: str = "data/corpus/clinical_mtsamples.jsonl"
    max_notes: int = 500
    sizes: list[int] = field(default_factory=lambda: [1000, 5000])
    heldout_fraction: float = 0.1
    # PubMed is public, and 6,000 abstracts are too few for the recipe's privacy floor (20 documents): only a few
    # hundred word forms reach it. The published figures mine every form (--min_document_frequency 20: the recipe's).
    min_document_frequency: int = 1
    scratch: bool = True
    output: str = str(REPO / "benchmarks" / "results" / "vocabulary_fertility.json")


def identity_checks(old, new, added, texts) -> dict:
    """Shares of texts whose new ids, each added token expanded to its old sub-tokens, equal the old ids, and whose
    new ids decode back to the exact text."""
    sub = dict(zip(added.values(), old(list(added), add_special_tokens=False)["input_ids"]))
    old_ids = old(texts, add_special_tokens=False)["input_ids"]
    new_ids = new(texts, add_special_tokens=False)["input_ids"]
    preserved = sum([x for i in n for x in sub.get(i, [i])] == o for n, o in zip(new_ids, old_ids))
    exact = sum(new.decode(n) == t for n, t in zip(new_ids, texts))
    return {"old_ids_preserved": preserved / len(texts), "roundtrip_exact": exact / len(texts)}


def main(args: BenchmarkArguments) -> dict:
    shared = Path(args.shared)
    tokenizer_dir = shared / "modernbert-tokenizer"
    if not tokenizer_dir.is_dir():
        raise SystemExit(f"needs {tokenizer_dir} (the project's ../shared data folder); set CLINICAL_MODERNBERT_SHARED")
    base = AutoTokenizer.from_pretrained(tokenizer_dir)
    source = SourceConfig(name="pubmed", path="json", data_files=str(shared / args.corpus))
    mining, heldout = read_corpus([source], args.heldout_fraction, 10**9)
    notes_source = SourceConfig(name="notes", path="json", data_files=str(shared / args.notes))
    texts = {"heldout_pubmed": heldout, "clinical_notes": read_corpus([notes_source], 0, args.max_notes)[0]}
    listed = {Path(p).stem: read_terms(shared / p) for p in args.lexicons}
    lexicons = {**listed, **{f"{name}_lowercase": [t.lower() for t in terms] for name, terms in listed.items()}}
    lexicon_terms = [t.lower() for terms in listed.values() for t in terms]
    logger.info("Data: %d documents mined, %d held out, %d clinical notes; lexicons %s", len(mining), len(heldout),
                len(texts["clinical_notes"]), {k: len(v) for k, v in listed.items()})

    rows = []
    for with_lexicon in (False, True):
        start = time.perf_counter()
        mined = mine_candidates(base, mining, max(args.sizes), lexicon_terms if with_lexicon else (),
                                args.min_document_frequency)
        mining_s = time.perf_counter() - start
        for n in sorted(args.sizes):
            start = time.perf_counter()
            extension = extend_tokenizer(base, [c.form for c in mined.candidates[:n]])
            extend_s = time.perf_counter() - start
            report = fertility_report(extension.tokenizer, texts, lexicons, before=base)
            rows.append({
                "method": "extend", "mined_from": "corpus + lexicon" if with_lexicon else "corpus",
                "tokens_added": len(extension.added), "vocab_size": len(extension.tokenizer),
                "lexicon_in_sample": with_lexicon, **report,
                **identity_checks(base, extension.tokenizer, extension.added, [d for v in texts.values() for d in v]),
                "mining_seconds": round(mining_s, 2), "extend_seconds": round(extend_s, 2),
                "examples": [c.form for c in mined.candidates[:15]],
            })
            logger.info("Eval: extend %s N=%d done", rows[-1]["mined_from"], n)
    if args.scratch:
        start = time.perf_counter()
        scratch = train_bpe_tokenizer(mining, vocab_size=len(base))
        rows.append({"method": "scratch", "mined_from": "corpus", "tokens_added": 0, "vocab_size": len(scratch),
                     "lexicon_in_sample": False, **fertility_report(scratch, texts, lexicons, before=base),
                     "train_seconds": round(time.perf_counter() - start, 2)})
        logger.info("Eval: scratch BPE of %d tokens done", len(scratch))

    result = {
        "benchmark": "vocabulary_fertility",
        "base_tokenizer": "ModernBERT (answerdotai/ModernBERT-base tokenizer, from ../shared/modernbert-tokenizer)",
        "corpus": args.corpus, "mining_documents": len(mining), "heldout_fraction": args.heldout_fraction,
        "min_document_frequency": args.min_document_frequency,
        "text_sets": {k: rows[0]["counts"][k] for k in texts},
        "lexicons": {k: {c: rows[0]["counts"][k][c] for c in ("terms", "single_word_terms")} for k in lexicons},
        "environment": {"python": platform.python_version(), "transformers": transformers.__version__,
                        "tokenizers": tokenizers.__version__, "cpu_count": os.cpu_count()},
        "rows": rows,
    }
    print_table(result, [*texts, *lexicons])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    logger.info("Save: %s", args.output)
    return result


def print_table(result: dict, columns: list[str]) -> None:
    """One line per row: fertility before -> after for each text set and lexicon; one-token share for lexicons."""
    print("\nfertility (tokens per word; lexicons: per single-word term) before -> after [share of one-token terms]")
    print(f"{'method':<8} {'mined from':<17} {'added':>6}  " + "  ".join(f"{c[:26]:<26}" for c in columns))
    for row in result["rows"]:
        f, s = row["fertility"], row["single_token_share"]
        line = f"{row['method']:<8} {row['mined_from']:<17} {row['tokens_added']:>6}  "
        cells = []
        for c in columns:
            cell = f"{f[c]['before']:.3f} -> {f[c]['after']:.3f}"
            if c in s:
                cell += f" [{s[c]['after']:.0%}]" + ("*" if row["lexicon_in_sample"] else "")
            cells.append(f"{cell:<26}")
        print(line + "  ".join(cells))
    print("* in-sample: the lexicon was a mining source. One-token share before: "
          + ", ".join(f"{c} {v['before']:.1%}" for c, v in result["rows"][0]["single_token_share"].items()))


if __name__ == "__main__":
    setup_logging()
    main(*parse_recipe_args([BenchmarkArguments]))
