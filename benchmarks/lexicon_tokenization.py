"""Lexicon benchmark: how much medical-term flagging slows the data stream's tokenization.

    python benchmarks/lexicon_tokenization.py [--corpus ../shared/data/corpus/pubmed_ohsumed.jsonl] [--repeats 5]

Tokenizes the corpus in blocks of 256 documents with the real ModernBERT tokenizer, in these modes, interleaved block
by block:
- `tokenize`: ids only, what the stream needs without a lexicon;
- `tokenize+offsets`: ids and offset mapping;
- `lexicon.tokenize`: ids and medical flags (`DocumentEncoder`: ids only, the character map from token byte lengths);
- `offsets+token_flags`: ids and offsets, then flags from the offsets (the stream's former path).
for each lexicon (the embedded default; the shared drug lists, ~100k terms; all four shared word lists, ~200k terms),
with the tokenizer single-threaded and multi-threaded (TOKENIZERS_PARALLELISM). Each block's best of `--repeats` runs
counts, in CPU time of this process (all threads; robust to other processes on a shared machine) and in wall time.
Prints a table, writes benchmarks/results/lexicon_tokenization.json. Target: flagging slows tokenization <= 20%.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

from transformers import AutoTokenizer

from clinical_modernbert.lexicon import Lexicon
from clinical_modernbert.tokenization import DocumentEncoder

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLINICAL_MODERNBERT_SHARED", ROOT.parent / "shared"))
BLOCK = 256
LEXICONS = {
    "default": [],
    "drug_lists": ["drug_names_drugbank.txt", "drug_names_rxnorm.txt"],
    "all_word_lists": ["drug_names_drugbank.txt", "drug_names_rxnorm.txt", "mesh_descriptors.txt",
                       "medical_wordlist.txt"],
}


def modes(tokenizer, encoder, lexicon):
    def plain(texts):
        return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]

    def with_offsets(texts):
        return tokenizer(texts, add_special_tokens=False, return_attention_mask=False, return_offsets_mapping=True)

    def from_offsets(texts):  # the stream's former path: flags from the offset mapping, token by token
        flags = []
        for text, offsets in zip(texts, with_offsets(texts)["offset_mapping"]):
            doc_flags, spans, s, previous = [0] * len(offsets), lexicon.spans(text), 0, -1
            for i, (start, end) in enumerate(offsets):
                while s < len(spans) and spans[s][1] <= start:
                    s += 1
                if s < len(spans) and end > spans[s][0]:
                    doc_flags[i] = 2 if previous == s else 1
                    previous = s
            flags.append(doc_flags)
        return flags

    return {
        "tokenize": plain,
        "tokenize+offsets": with_offsets,
        "lexicon.tokenize": lambda texts: lexicon.tokenize(encoder, texts),
        "offsets+token_flags": from_offsets,
    }


def best_times(functions: dict, blocks: list, repeats: int) -> dict:
    """Per clock and mode: the sum over blocks of each block's fastest run (modes interleaved within each block)."""
    clocks = {"cpu": time.process_time, "wall": time.perf_counter}
    totals = {clock: dict.fromkeys(functions, 0.0) for clock in clocks}
    for block in blocks:
        best = {clock: dict.fromkeys(functions, float("inf")) for clock in clocks}
        for _ in range(repeats):
            for name, function in functions.items():
                cpu, wall = time.process_time(), time.perf_counter()
                function(block)
                best["cpu"][name] = min(best["cpu"][name], time.process_time() - cpu)
                best["wall"][name] = min(best["wall"][name], time.perf_counter() - wall)
        for clock in clocks:
            for name in functions:
                totals[clock][name] += best[clock][name]
    return totals


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default=str(SHARED / "data/corpus/pubmed_ohsumed.jsonl"))
    parser.add_argument("--tokenizer", default=str(SHARED / "modernbert-tokenizer"))
    parser.add_argument("--lexicon_dir", default=str(SHARED / "data/lexicon"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max_documents", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/lexicon_tokenization.json"))
    args = parser.parse_args()
    for path in (args.corpus, args.tokenizer, args.lexicon_dir):
        if not Path(path).exists():
            raise SystemExit(f"needs {path} (the project's ../shared folder); pass --corpus/--tokenizer/--lexicon_dir")

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    encoder = DocumentEncoder(tokenizer)
    with open(args.corpus, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f][: args.max_documents]
    blocks = [texts[i : i + BLOCK] for i in range(0, len(texts), BLOCK)]
    n_tokens = sum(len(ids) for block in blocks for ids in tokenizer(block, add_special_tokens=False)["input_ids"])
    results = {"corpus": args.corpus, "documents": len(texts), "tokens": n_tokens, "block_documents": BLOCK,
               "repeats": args.repeats, "runs": []}
    for lexicon_name, files in LEXICONS.items():
        start = time.perf_counter()
        lexicon = Lexicon.from_files([str(Path(args.lexicon_dir) / f) for f in files])
        build_s = time.perf_counter() - start
        flagged = sum(f > 0 for flags in lexicon.tokenize(encoder, texts)[1] for f in flags)
        for parallel in ("false", "true"):
            os.environ["TOKENIZERS_PARALLELISM"] = parallel  # read by the tokenizer at every call
            seconds = best_times(modes(tokenizer, encoder, lexicon), blocks, args.repeats)
            results["runs"].append({
                "lexicon": lexicon_name, "terms": lexicon.n_terms, "build_s": build_s,
                "flagged_token_share": flagged / n_tokens, "tokenizer_parallel": parallel == "true",
                "seconds": seconds,
                "tokens_per_s": {clock: {name: n_tokens / s for name, s in t.items()} for clock, t in seconds.items()},
                "slowdown_vs_tokenize": {
                    clock: {name: s / t["tokenize"] - 1 for name, s in t.items()} for clock, t in seconds.items()
                },
            })
    results["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"

    names = list(results["runs"][0]["seconds"]["cpu"])
    print(f"{len(texts):,} documents, {n_tokens:,} tokens; slowdown vs `tokenize` (ids only): CPU time / wall time")
    print(f"{'lexicon':>15} {'terms':>8} {'flagged':>8} {'tok. threads':>12} " + " ".join(f"{n:>20}" for n in names[1:])
          + f" {'tokenize tokens/s':>18}")
    for run in results["runs"]:
        slow = run["slowdown_vs_tokenize"]
        cells = " ".join(f"{slow['cpu'][n]:>+9.1%} /{slow['wall'][n]:>+8.1%}" for n in names[1:])
        threads = "many" if run["tokenizer_parallel"] else "one"
        print(f"{run['lexicon']:>15} {run['terms']:>8,} {run['flagged_token_share']:>8.1%} {threads:>12} {cells} "
              f"{run['tokens_per_s']['wall']['tokenize']:>18,.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
