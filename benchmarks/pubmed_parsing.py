"""PubMed preparation benchmark: parsed citations per second per process, and the projected time for a whole baseline.

    python benchmarks/pubmed_parsing.py [--files 6] [--copies 25] [--repeats 3]

NCBI's real files in ../shared/data/pubmed_xml are cut to ~30 citations each, too few to time; their 120 modern
citations (`PubmedArticle`, both baselines and updates) are repeated `--copies` times with fresh PMIDs into each of
`--files` gzip files laid out like NCBI's. Times, best of `--repeats`: `iter_file` alone (citations/s of one
process), the parse phase of `prepare_pubmed` (parse + per-file Parquet + MD5) at `--num_proc` 1 and 2, and the final
pass (record rules + writing 64 shards). The projection scales them to a whole baseline: 1,334 files (the 2026
baseline's last file is pubmed26n1334) of ~150 MB of XML each and 38M citations (NCBI's order of magnitude); the
parse phase by XML bytes (these recent citations, with their reference lists, weigh more than the average one), the
final pass (titles and abstracts only) by citations. Downloads are not included.
Prints a table, writes benchmarks/results/pubmed_parsing.json.
"""

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path

from clinical_modernbert.corpora.ncbi import list_files
from clinical_modernbert.corpora.pubmed import OUTPUT_SCHEMA, _output_table, parse_files, select_records
from clinical_modernbert.corpora.pubmed_xml import iter_file
from clinical_modernbert.corpora.shards import write_shards

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLINICAL_MODERNBERT_SHARED", ROOT.parent / "shared"))
BASELINE_FILES, BASELINE_CITATIONS, BASELINE_MB_PER_FILE = 1334, 38_000_000, 150
ARTICLE = re.compile(r"<PubmedArticle>.*?</PubmedArticle>", re.S)
PMID = re.compile(r'<PMID Version="(\d+)">\d+</PMID>')


def write_files(folder: Path, n_files: int, copies: int) -> tuple[int, int]:
    """`n_files` files of the shared modern citations repeated `copies` times; (citations, uncompressed bytes) each."""
    articles = [a for path in sorted((SHARED / "data/pubmed_xml").glob("[bu]*/pubmed*.xml.gz"))
                for a in ARTICLE.findall(gzip.decompress(path.read_bytes()).decode())]
    pmid = 0
    for k in range(n_files):
        parts = []
        for _ in range(copies):
            for article in articles:
                pmid += 1
                parts.append(PMID.sub(f'<PMID Version="\\1">{pmid}</PMID>', article, count=1))
        text = '<?xml version="1.0" encoding="UTF-8"?>\n<PubmedArticleSet>\n' + "".join(parts) + "</PubmedArticleSet>"
        (folder / f"pubmed26n{k + 1:04d}.xml.gz").write_bytes(gzip.compress(text.encode(), compresslevel=6))
    return len(articles) * copies, len(text.encode())


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--copies", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/pubmed_parsing.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pubmed_bench_"))
    try:
        (work / "baseline").mkdir()
        per_file, file_bytes = write_files(work / "baseline", args.files, args.copies)
        files = list_files(str(work / "baseline"))
        citations = per_file * args.files

        iter_s = best(lambda: sum(1 for _ in iter_file(files[0].location)), args.repeats)
        phases = {}
        for num_proc in (1, 2):
            def parse(num_proc=num_proc):
                shutil.rmtree(work / "parsed", ignore_errors=True)
                return parse_files(files, work / "parsed", num_proc)
            phases[f"parse_num_proc_{num_proc}_s"] = best(parse, args.repeats)
        parsed = parse_files(files, work / "parsed")

        def final_pass():
            selected, counts = select_records(parsed, ["eng"], False)
            tables = (_output_table(p, f.name, rows) for p, f, rows in zip(parsed, files, selected) if len(rows))
            write_shards(tables, counts["written"], 64, work / "out", OUTPUT_SCHEMA)
        phases["final_pass_s"] = best(final_pass, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mb = file_bytes / 1e6 * args.files
    parse_mb_per_s = {n: mb / phases[f"parse_num_proc_{n}_s"] for n in (1, 2)}
    final_per_s = citations / phases["final_pass_s"]
    final_hours = BASELINE_CITATIONS / final_per_s / 3600
    results = {
        "files": args.files, "citations_per_file": per_file, "uncompressed_mb_per_file": file_bytes / 1e6,
        "repeats": args.repeats,
        "iter_file_citations_per_s": per_file / iter_s,
        "iter_file_mb_per_s": file_bytes / 1e6 / iter_s,
        **phases,
        "parse_citations_per_s": {n: citations / phases[f"parse_num_proc_{n}_s"] for n in (1, 2)},
        "parse_mb_per_s": parse_mb_per_s,
        "final_pass_citations_per_s": final_per_s,
        "baseline": {"files": BASELINE_FILES, "citations": BASELINE_CITATIONS, "mb_per_file": BASELINE_MB_PER_FILE},
        "projected_baseline_hours": {
            n: BASELINE_FILES * BASELINE_MB_PER_FILE / parse_mb_per_s[n] / 3600 + final_hours for n in (1, 2)
        },
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(f"{args.files} files x {per_file:,} citations ({file_bytes / 1e6:.1f} MB uncompressed each), "
          f"best of {args.repeats}")
    print("| step | citations/s | MB of XML/s |\n|---|---|---|")
    print(f"| iter_file, 1 process | {results['iter_file_citations_per_s']:,.0f} | "
          f"{results['iter_file_mb_per_s']:.1f} |")
    for n in (1, 2):
        print(f"| parse phase, --num_proc {n} | {results['parse_citations_per_s'][n]:,.0f} | {parse_mb_per_s[n]:.1f} |")
    print(f"| final pass (rules + 64 shards) | {final_per_s:,.0f} | |")
    for n in (1, 2):
        print(f"projected whole baseline ({BASELINE_FILES:,} files x {BASELINE_MB_PER_FILE} MB, "
              f"{BASELINE_CITATIONS / 1e6:.0f}M citations), --num_proc {n}: "
              f"{results['projected_baseline_hours'][n]:.1f} h (downloads not included)")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
