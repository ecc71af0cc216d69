"""GPU training throughput and MFU of a ModernBERT-base-shaped model on packed batches, per attention backend.

    python benchmarks/gpu_throughput.py                      # on a CUDA machine: 1024 and 8192, every backend
    python benchmarks/gpu_throughput.py --compile --sparse_prediction
    python benchmarks/gpu_throughput.py --smoke              # CPU, tiny model, 2 steps: checks the code path only

Random weights, the real config (22 layers, hidden 768, 12 heads, GeGLU 1152, vocab 50,368), the project's own
collator and packed rows of real text, bf16 autocast. MFU = model FLOPs (clinical_modernbert.flops, attention over
the pairs the document mask allows) / the peak bf16 matmul rate measured on the same GPU by this script.
Prints a table and writes benchmarks/results/gpu_throughput.json. Without CUDA (and without --smoke) it measures
nothing and says so.
"""

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, ModernBertConfig, ModernBertForMaskedLM

from clinical_modernbert.assets import EMBEDDED_CORPUS, EMBEDDED_TOKENIZER_DIR
from clinical_modernbert.attention import packed_attention_inputs
from clinical_modernbert.configs import DataArguments
from clinical_modernbert.data.stream import TrainingStream
from clinical_modernbert.flops import training_flops
from clinical_modernbert.masking import MedicalMaskingCollator

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BASE = dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12, vocab_size=50368,
            local_attention=128, global_attn_every_n_layers=3, max_position_embeddings=8192)
TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, vocab_size=50368,
            local_attention=16, global_attn_every_n_layers=3, max_position_embeddings=8192)


def peak_matmul_tflops(device, n=8192, repeats=20) -> float:
    """Measured bf16 matmul rate (TFLOP/s) of this device."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def packed_batches(tokenizer, seq_len, rows, steps):
    corpus = SHARED / "data/corpus/pubmed_ohsumed.jsonl"
    source = {"name": "pubmed", "path": "json", "data_files": str(corpus if corpus.is_file() else EMBEDDED_CORPUS)}
    stream = iter(TrainingStream(DataArguments(sources=[source], max_seq_length=seq_len, eval_fraction=0.0), tokenizer))
    collator = MedicalMaskingCollator(tokenizer=tokenizer, mlm_probability=0.3, seed=0, pad_to_multiple_of=seq_len)
    batches = []
    for _ in range(steps):
        batch = collator([next(stream) for _ in range(rows)])
        batches.append({k: batch[k] for k in ("input_ids", "labels", "position_ids", "document_ids")})
    return batches


def run_backend(backend, shape, batches, device, args, peak):
    config = ModernBertConfig(**shape, sparse_prediction=args.sparse_prediction)
    config._attn_implementation = backend
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    step_fn = torch.compile(model) if args.compile else model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, flops, tokens = [], 0, 0
    for i, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        document_ids = batch.pop("document_ids")
        inputs = {**batch, **packed_attention_inputs(config, document_ids, dtype=torch.bfloat16)}
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = step_fn(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            counted = (batch["labels"] != -100) if args.sparse_prediction else (document_ids >= 0)
            predicted = int(counted.sum())
            flops += training_flops(config, document_ids, predicted)
            tokens += int((document_ids >= 0).sum())
    elapsed = sum(times)
    return {
        "tokens_per_s": tokens / elapsed,
        "step_time_s": elapsed / len(times),
        "model_tflops_per_s": flops / elapsed / 1e12,
        "mfu": flops / elapsed / 1e12 / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "loss_last": float(loss.detach()),
    }


def available_backends(device):
    if device.type != "cuda":
        return ["sdpa"]  # flex attention has no backward on CPU
    backends = ["sdpa", "flex_attention"]
    if importlib.util.find_spec("flash_attn") is not None:
        backends.append("flash_attention_2")
    return backends


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq_lens", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--tokens_per_step", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--sparse_prediction", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, 2 steps: code path only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu_throughput.json"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        print("No CUDA device: nothing measured (use --smoke to check the code path on CPU).")
        return 0
    shape = TINY if args.smoke else BASE
    if args.smoke:
        args.seq_lens, args.tokens_per_step, args.steps, args.warmup = [256], 512, 2, 0
    tokenizer_dir = SHARED / "modernbert-tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir if tokenizer_dir.is_dir() else EMBEDDED_TOKENIZER_DIR)
    peak = None if args.smoke else peak_matmul_tflops(device)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "peak_bf16_matmul_tflops": peak, "compile": args.compile,
               "sparse_prediction": args.sparse_prediction, "runs": []}
    for seq_len in args.seq_lens:
        rows = max(args.tokens_per_step // seq_len, 1)
        batches = packed_batches(tokenizer, seq_len, rows, args.steps)
        for backend in args.backends or available_backends(device):
            run = {"seq_len": seq_len, "rows": rows, "backend": backend}
            try:
                run.update(run_backend(backend, shape, batches, device, args, peak))
            except Exception as error:  # report a backend that fails (e.g. out of memory) and go on with the others
                run["error"] = f"{type(error).__name__}: {error}"[:300]
            results["runs"].append(run)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    print(f"device {results['device']}, peak bf16 matmul {peak or float('nan'):.0f} TFLOP/s, compile={args.compile}, "
          f"sparse_prediction={args.sparse_prediction}")
    print(f"{'seq':>5} {'backend':>18} {'tokens/s':>10} {'step s':>8} {'TFLOP/s':>8} {'MFU':>6} {'mem GiB':>8}")
    for r in results["runs"]:
        if "error" in r:
            print(f"{r['seq_len']:>5} {r['backend']:>18}  failed: {r['error']}")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        print(f"{r['seq_len']:>5} {r['backend']:>18} {r['tokens_per_s']:>10,.0f} {r['step_time_s']:>8.3f} "
              f"{r['model_tflops_per_s']:>8.1f} {mfu:>6} {mem:>8}")
    if not args.smoke:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0 if all("error" not in r for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
