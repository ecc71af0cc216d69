"""Data pipeline benchmark: stream -> tokenize -> medical flags -> pack, against the raw tokenizer alone.

    python benchmarks/data_pipeline.py [--corpus ../shared/data/corpus/pubmed_ohsumed.jsonl] [--train_steps 8]

Prints a table and writes benchmarks/results/data_pipeline.json:
- pipeline tokens/s (PackedStream with the real ModernBERT tokenizer and the default lexicon) vs raw tokenizer tokens/s;
- packing efficiency (non-pad fraction) at 1024 and 8192, packed vs one document per row padded to the length;
- training non-pad tokens/s of the tiny embedded model on packed vs per-document padded rows at 1024 (same rows per batch).
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, ModernBertConfig, ModernBertForMaskedLM

from clinical_modernbert.assets import EMBEDDED_MODEL_CONFIG
from clinical_modernbert.attention import packed_attention_inputs
from clinical_modernbert.configs import DataArguments
from clinical_modernbert.data.stream import PackedStream
from clinical_modernbert.lexicon import Lexicon
from clinical_modernbert.masking import MedicalMaskingCollator

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def read_texts(path):
    return [json.loads(line)["text"] for line in open(path, encoding="utf-8")]


def raw_tokenizer_rate(tokenizer, texts, block=256):
    start, n = time.perf_counter(), 0
    for i in range(0, len(texts), block):
        n += sum(len(ids) for ids in tokenizer(texts[i : i + block], add_special_tokens=False)["input_ids"])
    return n / (time.perf_counter() - start), n


def stream_rows(corpus, tokenizer, lexicon, max_len, packing):
    args = DataArguments(
        sources=[{"name": "pubmed", "path": "json", "data_files": str(corpus)}],
        max_seq_length=max_len, packing=packing, eval_fraction=0.0,
    )
    start = time.perf_counter()
    rows = list(PackedStream(args, tokenizer, lexicon))
    return rows, time.perf_counter() - start


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
    parser.add_argument("--batch_rows", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/data_pipeline.json"))
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    lexicon = Lexicon.from_files()
    texts = read_texts(args.corpus)

    raw_rate, raw_tokens = raw_tokenizer_rate(tokenizer, texts)
    results = {"corpus": args.corpus, "documents": len(texts), "raw_tokenizer_tokens_per_s": raw_rate,
               "lexicon_terms": len(lexicon), "packing": {}}
    for max_len in (1024, 8192):
        packed, seconds = stream_rows(args.corpus, tokenizer, lexicon, max_len, packing=True)
        padded, _ = stream_rows(args.corpus, tokenizer, None, max_len, packing=False)
        tokens = sum(len(r["input_ids"]) for r in packed)
        results["packing"][max_len] = {
            "pipeline_tokens_per_s": tokens / seconds,
            "pipeline_vs_raw_tokenizer": tokens / seconds / raw_rate,
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
    results["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"

    print(f"raw tokenizer: {raw_rate:,.0f} tokens/s over {raw_tokens:,} tokens ({len(texts):,} documents)")
    print(f"{'max_len':>8} {'pipeline tok/s':>15} {'vs raw':>7} {'packed fill':>12} {'padded fill':>12}")
    for max_len, r in results["packing"].items():
        print(f"{max_len:>8} {r['pipeline_tokens_per_s']:>15,.0f} {r['pipeline_vs_raw_tokenizer']:>7.2f} "
              f"{r['packed_non_pad_fraction']:>12.3f} {r['per_document_padded_non_pad_fraction']:>12.3f}")
    t = results["training_1024"]
    print(f"training at 1024: packed {t['packed_non_pad_tokens_per_s']:,.0f} vs padded "
          f"{t['padded_non_pad_tokens_per_s']:,.0f} non-pad tokens/s = {t['speedup']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
