"""Data pipeline benchmark: stream -> tokenize -> medical flags -> pack, against the raw tokenizer alone.

    python benchmarks/data_pipeline.py [--corpus ../shared/data/corpus/pubmed_ohsumed.jsonl] [--repeats 7]

Prints a table and writes benchmarks/results/data_pipeline.json:
- pipeline document tokens/s (TrainingStream with the real ModernBERT tokenizer and the default lexicon, from the first
  read to the last packed row; building the stream, a one-off, is timed apart) against the raw tokenizer on the texts
  already in memory, in the stream's blocks, both as `tokenizer(texts)` and as the backend's `encode_batch` (the
  faster of the two is the baseline). The pipeline itself calls `encode_batch_fast` (ids only, no offsets: see
  `tokenization.py`), so it is also reported against that call. Runs are interleaved and repeated; the ratio is the
  median of the per-repeat ratios (this machine's wall clock is noisy), with its range;
- the CPU work ratio: single-threaded CPU seconds of the raw tokenizer over those of the pipeline, at 1024;
- packing efficiency (non-pad fraction) at 1024 and 8192, packed vs one document per row padded to the length;
- training non-pad tokens/s of the tiny embedded model on packed vs per-document padded rows at 1024 (same rows per
  batch).
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, ModernBertConfig, ModernBertForMaskedLM

from clinical_modernbert.assets import EMBEDDED_MODEL_CONFIG
from clinical_modernbert.attention import packed_attention_inputs
from clinical_modernbert.configs import DataArguments
from clinical_modernbert.data.stream import BLOCK_CHARS, TrainingStream
from clinical_modernbert.lexicon import Lexicon
from clinical_modernbert.masking import MedicalMaskingCollator

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def read_texts(path):
    return [json.loads(line)["text"] for line in open(path, encoding="utf-8")]


def blocks(texts):
    """`texts` in blocks of `BLOCK_CHARS` characters, as the stream tokenizes them."""
    block, chars = [], 0
    for text in texts:
        block.append(text)
        chars += len(text)
        if chars >= BLOCK_CHARS:
            yield block
            block, chars = [], 0
    if block:
        yield block


def raw_tokenizer_rates(tokenizer, texts):
    """Tokens/s of `tokenizer(texts)` and of the backend's `encode_batch`, in `blocks`."""
    backend, rates = tokenizer.backend_tokenizer, {}
    calls = {
        "tokenizer_call": lambda block: tokenizer(block, add_special_tokens=False, return_attention_mask=False)[
            "input_ids"],
        "backend_encode_batch": lambda block: [e.ids for e in backend.encode_batch(block, add_special_tokens=False)],
        "backend_encode_batch_fast": lambda block: [
            e.ids for e in backend.encode_batch_fast(block, add_special_tokens=False)],
    }
    for name, call in calls.items():
        start, n = time.perf_counter(), 0
        for block in blocks(texts):
            n += sum(map(len, call(block)))
        rates[name] = n / (time.perf_counter() - start)
    return rates, n


def cpu_work_ratio(corpus, tokenizer, lexicon, texts, repeats):
    """Single-threaded CPU seconds of the raw tokenizer (`encode_batch`, ids) over those of the pipeline at 1024
    (from the first read to the last row, as `stream_rate`).

    The work ratio bounds the wall-clock ratio on a fully busy machine: overlapping stages can hide idle time, not
    work. Median of `repeats`.
    """
    backend, previous = tokenizer.backend_tokenizer, os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # read by the tokenizer at every call
    ratios = []
    try:
        for _ in range(repeats):
            start = time.process_time()
            for block in blocks(texts):
                [e.ids for e in backend.encode_batch(block, add_special_tokens=False)]
            raw = time.process_time() - start
            stream = packed_stream(corpus, tokenizer, lexicon, 1024, packing=True)
            start = time.process_time()
            for _ in stream:
                pass
            ratios.append(raw / (time.process_time() - start))
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM")
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
    return statistics.median(ratios)


def packed_stream(corpus, tokenizer, lexicon, max_len, packing):
    args = DataArguments(
        sources=[{"name": "pubmed", "path": "json", "data_files": str(corpus)}],
        max_seq_length=max_len, packing=packing, eval_fraction=0.0,
    )
    return TrainingStream(args, tokenizer, lexicon, passes=1)


def stream_rate(corpus, tokenizer, lexicon, max_len):
    """Document tokens/s from the first read to the last row, and seconds to build the stream.

    Rows are consumed as a trainer consumes them, not kept (the raw tokenizer's ids are not kept either; keeping
    1.7M token ids alive costs allocation time of its own). Document tokens exclude the [CLS]/[SEP] each document
    gets in a row, as the raw tokenizer counts none.
    """
    start = time.perf_counter()
    stream = packed_stream(corpus, tokenizer, lexicon, max_len, packing=True)
    built = time.perf_counter()
    tokens = sum(len(row["input_ids"]) - 2 * len(row["doc_lengths"]) for row in stream)
    return tokens / (time.perf_counter() - built), built - start


def non_pad_fraction(rows, max_len):
    return sum(len(r["input_ids"]) for r in rows) / (len(rows) * max_len)


def train_rate(rows, tokenizer, max_len, batch_rows, steps):
    torch.manual_seed(0)
    config = ModernBertConfig.from_json_file(str(EMBEDDED_MODEL_CONFIG))
    config.vocab_size = len(tokenizer) + (-len(tokenizer)) % 64
    config.pad_token_id, config.cls_token_id, config.sep_token_id = (
        tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id)
    model = ModernBertForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    collator = MedicalMaskingCollator(tokenizer=tokenizer, mlm_probability=0.15, seed=0, pad_to_multiple_of=max_len)
    batches = [collator(rows[i * batch_rows : (i + 1) * batch_rows]) for i in range(steps + 1)]
    tokens, elapsed = 0, 0.0
    for i, batch in enumerate(batches):
        batch = {k: v for k, v in batch.items() if k in ("input_ids", "labels", "attention_mask", "position_ids",
                                                          "document_ids")}
        document_ids = batch.pop("document_ids")
        if bool((document_ids.max(dim=1).values > 0).any()):
            batch.update(packed_attention_inputs(model.config, document_ids))
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i:  # the first step warms up
            elapsed += time.perf_counter() - start
            tokens += int((document_ids >= 0).sum())
    return tokens / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default=str(SHARED / "data/corpus/pubmed_ohsumed.jsonl"))
    parser.add_argument("--tokenizer", default=str(SHARED / "modernbert-tokenizer"))
    parser.add_argument("--train_steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch_rows", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/data_pipeline.json"))
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    lexicon = Lexicon.from_files()
    texts = read_texts(args.corpus)

    lengths = (1024, 8192)
    runs = {"raw": [], **{n: [] for n in lengths}}
    for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every measure
        rates, raw_tokens = raw_tokenizer_rates(tokenizer, texts)
        runs["raw"].append(rates)
        for max_len in lengths:
            rate, setup = stream_rate(args.corpus, tokenizer, lexicon, max_len)
            runs[max_len].append({"rate": rate, "setup": setup})
    results = {"corpus": args.corpus, "documents": len(texts), "document_tokens": raw_tokens,
               "lexicon_terms": len(lexicon), "repeats": args.repeats, "raw_tokenizer_tokens_per_s": {
                   name: statistics.median(r[name] for r in runs["raw"]) for name in runs["raw"][0]}, "packing": {}}
    results["cpu_work_ratio_1024"] = cpu_work_ratio(args.corpus, tokenizer, lexicon, texts, repeats=3)
    for max_len in lengths:
        packed = list(packed_stream(args.corpus, tokenizer, lexicon, max_len, packing=True))
        padded = list(packed_stream(args.corpus, tokenizer, None, max_len, packing=False))
        ratios = [run["rate"] / max(raw["tokenizer_call"], raw["backend_encode_batch"])
                  for run, raw in zip(runs[max_len], runs["raw"])]
        results["packing"][max_len] = {
            "pipeline_tokens_per_s": statistics.median(run["rate"] for run in runs[max_len]),
            "pipeline_vs_raw_tokenizer": statistics.median(ratios),
            "pipeline_vs_raw_tokenizer_range": [min(ratios), max(ratios)],
            "pipeline_vs_raw_tokenizer_repeats": ratios,
            "pipeline_vs_tokenizer_call": statistics.median(
                run["rate"] / raw["tokenizer_call"] for run, raw in zip(runs[max_len], runs["raw"])),
            "pipeline_vs_ids_without_offsets": statistics.median(
                run["rate"] / raw["backend_encode_batch_fast"] for run, raw in zip(runs[max_len], runs["raw"])),
            "stream_setup_s": statistics.median(run["setup"] for run in runs[max_len]),
            "packed_non_pad_fraction": non_pad_fraction(packed, max_len),
            "per_document_padded_non_pad_fraction": non_pad_fraction(padded, max_len),
            "rows_packed": len(packed),
            "rows_per_document": len(padded),
        }
        if max_len == 1024:
            packed_rate = train_rate(packed, tokenizer, max_len, args.batch_rows, args.train_steps)
            padded_rate = train_rate(padded, tokenizer, max_len, args.batch_rows, args.train_steps)
            results["training_1024"] = {"packed_non_pad_tokens_per_s": packed_rate,
                                        "padded_non_pad_tokens_per_s": padded_rate,
                                        "speedup": packed_rate / padded_rate,
                                        "rows_per_batch": args.batch_rows, "steps": args.train_steps}
    results["machine"] = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                          f"torch {torch.__version__}")

    raw = results["raw_tokenizer_tokens_per_s"]
    print(f"raw tokenizer, tokens/s (median of {args.repeats}, {raw_tokens:,} tokens, {len(texts):,} documents): "
          f"tokenizer(texts) {raw['tokenizer_call']:,.0f}, backend encode_batch {raw['backend_encode_batch']:,.0f}, "
          f"encode_batch_fast (ids only, no offsets) {raw['backend_encode_batch_fast']:,.0f}")
    print(f"{'max_len':>8} {'pipeline tok/s':>15} {'vs raw':>7} {'range':>11} {'vs call':>8} {'vs fast':>8} "
          f"{'setup s':>8} {'packed fill':>12} {'padded fill':>12}")
    for max_len, r in results["packing"].items():
        low, high = r["pipeline_vs_raw_tokenizer_range"]
        print(f"{max_len:>8} {r['pipeline_tokens_per_s']:>15,.0f} {r['pipeline_vs_raw_tokenizer']:>7.2f} "
              f"{low:>5.2f}-{high:<5.2f} {r['pipeline_vs_tokenizer_call']:>8.2f} "
              f"{r['pipeline_vs_ids_without_offsets']:>8.2f} {r['stream_setup_s']:>8.2f} "
              f"{r['packed_non_pad_fraction']:>12.3f} {r['per_document_padded_non_pad_fraction']:>12.3f}")
    print(f"single-threaded CPU work, raw tokenizer / pipeline at 1024 (median of 3): "
          f"{results['cpu_work_ratio_1024']:.2f}")
    t = results["training_1024"]
    print(f"training at 1024: packed {t['packed_non_pad_tokens_per_s']:,.0f} vs padded "
          f"{t['padded_non_pad_tokens_per_s']:,.0f} non-pad tokens/s = {t['speedup']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
