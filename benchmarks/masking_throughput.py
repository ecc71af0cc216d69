"""Collator benchmark: `MedicalMaskingCollator` against the stock `DataCollatorForLanguageModeling`, same run.

    python benchmarks/masking_throughput.py [--repeats 7] [--threads 1]

Packed rows of real text (the sample corpus, or `--corpus`, tokenized with medical flags by the default lexicon) at
8x8192, 64x1024 and 128x128 tokens. Collators, timed interleaved (median of `--repeats` calls each):
- `stock`: the parent collator, token-level masking, given `special_tokens_mask` (its fast path);
- `weighted`: ours, token units, medical weight 3 (plus padding, packed-document tensors and statistics);
- `whole_term`: ours, medical terms as units (the recipe's setting);
- `whole_term+word`: ours, medical terms and ordinary words as units;
- `stock_whole_word` (8192 only): the parent with `whole_word_mask=True` (O(L^2), needs offsets).
Prints a table, writes benchmarks/results/masking_throughput.json. Targets: `weighted` >= 1.0x `stock`;
`whole_term` at 8192 >= 50x `stock_whole_word`.
"""

import argparse
import gzip
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
from transformers import AutoTokenizer, DataCollatorForLanguageModeling

from clinical_modernbert.assets import EMBEDDED_CORPUS, EMBEDDED_TOKENIZER_DIR
from clinical_modernbert.data.packing import BestFitPacker, chunk_document, row_to_example
from clinical_modernbert.lexicon import Lexicon
from clinical_modernbert.masking import MedicalMaskingCollator
from clinical_modernbert.tokenization import DocumentEncoder

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ((8, 8192), (64, 1024), (128, 128))


def read_texts(path: str) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def packed_rows(tokenizer, lexicon, texts, max_len, n_rows):
    """At least `n_rows` full packed rows (the corpus is reused as often as needed)."""
    ids, flags = lexicon.tokenize(DocumentEncoder(tokenizer), texts)
    packer, rows = BestFitPacker(max_len), []
    while len(rows) < n_rows:
        for doc_ids, doc_flags in zip(ids, flags):
            for chunk in chunk_document(doc_ids, doc_flags, 0, max_len):
                rows.extend(packer.add(chunk))
    return [row_to_example(row, tokenizer.cls_token_id, tokenizer.sep_token_id) for row in rows[:n_rows]]


def stock_examples(tokenizer, rows, with_offsets):
    """The stock collator's input: ids, special-token mask and, for whole-word masking, offsets."""
    special, longest = set(tokenizer.all_special_ids), max(len(row["input_ids"]) for row in rows)
    examples = []
    for row in rows:
        example = {"input_ids": row["input_ids"], "special_tokens_mask": [int(i in special) for i in row["input_ids"]]}
        if with_offsets:  # byte-level BPE: "Ġ" is a space, so a token starting with it starts a word
            offsets, end = [], 0
            for piece in tokenizer.convert_ids_to_tokens(row["input_ids"]):
                start = end + piece.startswith("Ġ")
                end = start + len(piece) - piece.startswith("Ġ")
                offsets.append((start, end))
            example["offset_mapping"] = offsets + [(0, 0)] * (longest - len(offsets))  # `pad` leaves offsets alone
        examples.append(example)
    return examples


def median_seconds(functions: dict, repeats: int) -> dict:
    times = {name: [] for name in functions}
    for name, function in functions.items():  # warm-up
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default=str(EMBEDDED_CORPUS))
    parser.add_argument("--tokenizer", default=str(EMBEDDED_TOKENIZER_DIR))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (dataloader workers use 1)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/masking_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    lexicon = Lexicon.from_files()
    texts = read_texts(args.corpus)

    def ours(**kwargs):
        return MedicalMaskingCollator(tokenizer=tokenizer, mlm_probability=0.15, seed=0, medical_weight=3.0, **kwargs)

    stock = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    with warnings.catch_warnings():  # the stock whole-word collator warns that it drops random replacement
        warnings.simplefilter("ignore")
        stock_whole_word = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0,
                                                           whole_word_mask=True)
    collators = {"weighted": ours(whole_term_masking=False), "whole_term": ours(whole_term_masking=True),
                 "whole_term+word": ours(whole_term_masking=True, whole_word_masking=True)}
    results = {"corpus": args.corpus, "tokenizer": args.tokenizer, "repeats": args.repeats,
               "torch_threads": torch.get_num_threads(), "shapes": []}
    for batch, length in SHAPES:
        rows = packed_rows(tokenizer, lexicon, texts, length, batch)
        plain = stock_examples(tokenizer, rows, with_offsets=False)
        functions = {"stock": lambda plain=plain: stock(plain)}
        functions.update({name: (lambda c=c, rows=rows: c(rows)) for name, c in collators.items()})
        if length == 8192:
            with_offsets = stock_examples(tokenizer, rows, with_offsets=True)
            functions["stock_whole_word"] = lambda examples=with_offsets: stock_whole_word(examples)
        seconds = median_seconds(functions, args.repeats)
        tokens = batch * length
        medical = sum(f > 0 for r in rows for f in r["term_flags"]) / sum(len(r["term_flags"]) for r in rows)
        results["shapes"].append({
            "batch": batch, "length": length, "medical_token_share": medical,
            "tokens_per_s": {name: tokens / s for name, s in seconds.items()},
            "vs_stock": {name: seconds["stock"] / s for name, s in seconds.items()},
        })
    shape = results["shapes"][0]
    results["whole_term_vs_stock_whole_word_at_8192"] = (
        shape["tokens_per_s"]["whole_term"] / shape["tokens_per_s"]["stock_whole_word"]
    )
    results["machine"] = f"{platform.processor() or platform.machine()}, torch {torch.__version__}"

    names = ["stock", *collators, "stock_whole_word"]
    print(f"tokens/s (x stock), torch threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'shape':>9} " + " ".join(f"{n:>24}" for n in names))
    for r in results["shapes"]:
        cells = [f"{r['tokens_per_s'][n]:>14,.0f} ({r['vs_stock'][n]:>5.2f}x)" if n in r["tokens_per_s"]
                 else f"{'-':>24}" for n in names]
        print(f"{r['batch']:>3}x{r['length']:<5} " + " ".join(cells))
    print(f"whole-term masking vs stock whole_word_mask at 8x8192: "
          f"{results['whole_term_vs_stock_whole_word_at_8192']:,.0f}x faster")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
