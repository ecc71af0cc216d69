"""Peak memory of evaluation against the number of evaluation sequences: top-k ids per masked position vs full logits.

    python benchmarks/eval_memory.py                                    # CPU default: 2,048 tokens, 1/2/4/8 sequences
    python benchmarks/eval_memory.py --seq-len 8192 --counts 1 2 4 8    # the 8,192-token setting (needs ~15 GB RAM)

The model has ModernBERT-base's vocabulary (50,368) and a tiny body (hidden 64), so the logits dominate memory as they
do for the real model. Modes, each evaluated with batch size 1 through `MLMTrainer`:
  full_logits  the Trainer keeps every sequence's logits for `compute_metrics` (no `preprocess_logits_for_metrics`)
  topk         `MLMTopKMetrics` with `batch_eval_metrics=True` (top-k ids and NLL per masked position, per batch)
  topk_sparse  the same with ModernBERT's `sparse_prediction` (the head runs on masked positions only)
Each point runs in a fresh process; peak RSS is that process's `ru_maxrss`. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

MODES = ("full_logits", "topk", "topk_sparse")
DEFAULT_OUTPUT = Path(__file__).parent / "results" / "eval_memory.json"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_point(mode: str, count: int, seq_len: int, vocab: int) -> dict:
    """Evaluate `count` sequences of `seq_len` tokens in this process; return its peak RSS before and after."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from datasets import Dataset
    from transformers import ModernBertConfig, ModernBertForMaskedLM, TrainingArguments

    from clinical_modernbert.masking import MedicalMaskingCollator
    from clinical_modernbert.metrics.mlm_topk_metrics import MLMTopKMetrics
    from clinical_modernbert.tokenizer_training import train_bpe_tokenizer
    from clinical_modernbert.trainer import MLMTrainer

    torch.manual_seed(0)
    tokenizer = train_bpe_tokenizer([f"the patient {i} was given dose {i * 7} mg" for i in range(200)], 300)
    config = ModernBertConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        local_attention=16, max_position_embeddings=seq_len, pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
    )
    model = ModernBertForMaskedLM(config).eval()
    model.config.sparse_prediction = model.sparse_prediction = mode == "topk_sparse"
    body = torch.randint(5, len(tokenizer), (count, seq_len - 2))
    ids = [[tokenizer.cls_token_id, *row, tokenizer.sep_token_id] for row in body.tolist()]
    dataset = Dataset.from_dict({"input_ids": ids})
    collator = MedicalMaskingCollator(tokenizer=tokenizer, mlm_probability=0.15, seed=0)
    metrics = MLMTopKMetrics() if mode != "full_logits" else None
    args = TrainingArguments(
        output_dir="/tmp/eval_memory_benchmark", per_device_eval_batch_size=1, report_to="none",
        remove_unused_columns=False, batch_eval_metrics=metrics is not None, eval_do_concat_batches=False,
        dataloader_pin_memory=False, disable_tqdm=True,
    )
    trainer = MLMTrainer(
        model=model, args=args, eval_dataset=dataset, data_collator=collator,
        compute_metrics=metrics if metrics is not None else kept_logits_gb,
        preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics if metrics is not None else None,
    )
    before = peak_rss_mb()
    results = trainer.evaluate()
    return {
        "mode": mode,
        "sequences": count,
        "rss_before_eval_mb": round(before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "counted_positions": results.get("eval_num_positions"),
        "kept_logits_gb": results.get("eval_kept_logits_gb"),
    }


def kept_logits_gb(eval_pred) -> dict:
    """compute_metrics of the full-logits mode: it only reports what the Trainer kept for it."""
    return {"kept_logits_gb": sum(batch.nbytes for batch in eval_pred.predictions) / 1e9}


def slope(points: list[dict]) -> float:
    """Least-squares MB of peak RSS per additional sequence."""
    xs = [p["sequences"] for p in points]
    ys = [p["peak_rss_mb"] for p in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--vocab", type=int, default=50368)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_point(args.child[0], int(args.child[1]), args.seq_len, args.vocab)))
        return

    points = []
    for mode in args.modes:
        for count in args.counts:
            child = [sys.executable, __file__, "--child", mode, str(count), "--seq-len", str(args.seq_len),
                     "--vocab", str(args.vocab)]
            run = subprocess.run(child, capture_output=True, text=True, check=False)
            if run.returncode != 0:
                raise RuntimeError(f"{mode} with {count} sequences failed:\n{run.stderr[-3000:]}")
            points.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(f"  measured {mode} x {count}", file=sys.stderr)

    logits_mb = args.seq_len * args.vocab * 4 / 2**20
    print(f"\nPeak RSS (MB), {args.seq_len} tokens per sequence, vocab {args.vocab} "
          f"(fp32 logits: {logits_mb:.0f} MB per sequence), CPU, batch size 1\n")
    print(f"| mode | {' | '.join(f'{c} seq' for c in args.counts)} | MB per extra sequence |")
    print("|---|" + "---|" * (len(args.counts) + 1))
    slopes = {}
    for mode in args.modes:
        mode_points = [p for p in points if p["mode"] == mode]
        slopes[mode] = round(slope(mode_points), 1)
        cells = " | ".join(f"{p['peak_rss_mb']:.0f}" for p in mode_points)
        print(f"| {mode} | {cells} | {slopes[mode]:.1f} |")

    report = {
        "benchmark": "eval_memory",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": "cpu",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "seq_len": args.seq_len,
        "vocab_size": args.vocab,
        "hidden_size": 64,
        "batch_size": 1,
        "fp32_logits_mb_per_sequence": round(logits_mb, 1),
        "points": points,
        "peak_rss_mb_per_extra_sequence": slopes,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
