"""PubMed prepared once: NCBI's XML files parsed (resumably, in parallel) and resolved into one record per PMID.

Record rules, over the files in corpus order (baseline by file number, then update files by file number):
- a PMID listed in a `<DeleteCitation>` is removed with every record of it from that file or an earlier one;
- of the records left, the highest `Version` wins, and among equal versions the record from the latest file;
- the winner is then filtered (`languages`, `keep_without_abstract`): no older record stands in for a dropped one.

Each input file is parsed into `<output_dir>/parsed/<name>.parquet` (all records and deletions, before any filter)
and listed with its MD5 in `parsed/manifest.json`: a rerun parses only new or changed files, and a change of filters
re-reads only these. The final pass reads a few columns of them to choose the rows, then writes the shards.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..configs import PreparePubmedArguments
from .ncbi import NcbiFile, download, expected_md5, file_md5, list_files
from .pubmed_xml import Deletion, iter_file
from .shards import CARD, DATA_DIR, write_shards

logger = logging.getLogger(__name__)

PARSED_DIR = "parsed"
MANIFEST = "manifest.json"
ALL_LANGUAGES = "all"
NLM_TERMS = "https://www.nlm.nih.gov/databases/download/terms_and_conditions.html"
PARSED_SCHEMA = pa.schema([
    ("pmid", pa.int64()), ("version", pa.int32()), ("deleted", pa.bool_()), ("title", pa.string()),
    ("abstract", pa.string()), ("year", pa.int32()), ("language", pa.string()),
    ("publication_types", pa.list_(pa.string())),
])
OUTPUT_SCHEMA = pa.schema([
    ("pmid", pa.int64()), ("text", pa.string()), ("title", pa.string()), ("abstract", pa.string()),
    ("year", pa.int32()), ("language", pa.string()), ("publication_types", pa.list_(pa.string())),
    ("version", pa.int32()), ("source_file", pa.string()),
])


def prepare_pubmed(args: PreparePubmedArguments) -> dict:
    """Parse, resolve and write the corpus to `args.output_dir` (shards in `data/`, a dataset card); its summary."""
    baseline = list_files(args.source)
    files = (baseline + (list_files(args.updates) if args.updates else []))[: args.max_files]
    output_dir = Path(args.output_dir)
    parsed = parse_files(files, output_dir / PARSED_DIR, args.num_proc, args.download_retries)
    selected, counts = select_records(parsed, args.languages, args.keep_without_abstract)
    logger.info("Resolve: %s", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    tables = (_output_table(path, file.name, rows) for path, file, rows in zip(parsed, files, selected) if len(rows))
    write_shards(tables, counts["written"], args.num_shards, output_dir, OUTPUT_SCHEMA)
    summary = {
        "counts": counts,
        "baseline_files": [f.name for f in files[: len(baseline)]],
        "update_files": [f.name for f in files[len(baseline) :]],
        "baseline_year": baseline[-1].year,
        "languages": args.languages,
        "keep_without_abstract": args.keep_without_abstract,
        "num_shards": args.num_shards,
        "prepared_on": date.today().isoformat(),
    }
    (output_dir / CARD).write_text(dataset_card(summary))
    return summary


def parse_files(files: list[NcbiFile], parsed_dir: Path, num_proc: int = 1, retries: int = 3) -> list[Path]:
    """Parse each file into `parsed_dir/<name>.parquet` (downloading it first if remote), skipping those the manifest
    lists as done with the same MD5; `num_proc` files at a time. The parsed paths, in the order of `files`."""
    parsed_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = parsed_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    tasks = [(file, manifest.get(file.name, {}).get("md5"), parsed_dir, retries) for file in files]
    done_before = 0
    with ExitStack() as stack:
        mapper = stack.enter_context(ProcessPoolExecutor(num_proc)).map if num_proc > 1 else map
        for entry in tqdm(mapper(parse_file, *zip(*tasks)), total=len(tasks), desc="PubMed files", unit="file"):
            if entry is None:
                done_before += 1
                continue
            manifest[entry.pop("name")] = entry
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
            tmp.replace(manifest_path)
    logger.info("Parse: %d files, %d of them done by an earlier run (same MD5)", len(files), done_before)
    return [parsed_path(parsed_dir, file) for file in files]


def parsed_path(parsed_dir: Path, file: NcbiFile) -> Path:
    return parsed_dir / (file.name.removesuffix(".xml.gz") + ".parquet")


def parse_file(file: NcbiFile, done_md5: str | None, parsed_dir: Path, retries: int) -> dict | None:
    """Parse one file into its Parquet (all its citations and deletions); None if already done with this MD5."""
    md5 = expected_md5(file, retries)
    local = Path(file.location)
    if not file.remote:
        got = file_md5(local)
        if md5 is not None and got != md5:
            raise ValueError(f"{local} has MD5 {got}, not the {md5} of its .md5 file: download it again")
        md5 = got
    out = parsed_path(parsed_dir, file)
    if md5 == done_md5 and out.is_file():
        return None
    if file.remote:
        local = download(file.location, parsed_dir / file.name, md5, retries)
    rows, deletions = [], 0
    try:
        for item in iter_file(local):
            if isinstance(item, Deletion):
                rows.append({"pmid": item.pmid, "deleted": True})
                deletions += 1
            else:
                rows.append({**item, "deleted": False})
    finally:
        if file.remote:
            local.unlink()  # the Parquet holds all that is used: keep disk use flat
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=PARSED_SCHEMA), tmp)
    tmp.replace(out)
    return {"name": file.name, "md5": md5, "citations": len(rows) - deletions, "deletions": deletions}


def select_records(parsed: list[Path], languages: list[str], keep_without_abstract: bool
                   ) -> tuple[list[np.ndarray], dict[str, int]]:
    """Apply the record rules to the parsed files (in corpus order): the rows of each file that go into the corpus,
    and the counts of each rule."""
    columns = {name: [] for name in ("pmid", "version", "deleted", "has_abstract", "in_language", "file", "row")}
    keep_all_languages = ALL_LANGUAGES in languages
    for index, path in enumerate(parsed):
        table = pq.read_table(path, columns=["pmid", "version", "deleted", "language", "abstract"])
        columns["pmid"].append(table["pmid"].to_numpy())
        columns["version"].append(table["version"].fill_null(0).to_numpy())
        columns["deleted"].append(table["deleted"].to_numpy(zero_copy_only=False))
        has_abstract = pc.greater(pc.utf8_length(table["abstract"].fill_null("")), 0)
        columns["has_abstract"].append(has_abstract.to_numpy(zero_copy_only=False))
        in_language = pc.is_in(table["language"], value_set=pa.array(languages)).fill_null(False)
        columns["in_language"].append(np.full(table.num_rows, True) if keep_all_languages
                                      else in_language.to_numpy(zero_copy_only=False))
        columns["file"].append(np.full(table.num_rows, index, dtype=np.int32))
        columns["row"].append(np.arange(table.num_rows, dtype=np.int64))
    c = {name: np.concatenate(parts) for name, parts in columns.items()}

    # the latest file that deletes each PMID
    deletions = np.flatnonzero(c["deleted"])
    order = deletions[np.lexsort((c["file"][deletions], c["pmid"][deletions]))]
    last = _last_of_runs(c["pmid"][order])
    deleted_pmid, deleted_in = c["pmid"][order][last], c["file"][order][last]

    records = np.flatnonzero(~c["deleted"])
    position = np.minimum(np.searchsorted(deleted_pmid, c["pmid"][records]), max(len(deleted_pmid) - 1, 0))
    removed = (np.zeros(len(records), dtype=bool) if not len(deleted_pmid) else
               (deleted_pmid[position] == c["pmid"][records]) & (deleted_in[position] >= c["file"][records]))
    alive = records[~removed]

    # one record per PMID: highest version, then latest file (then last in its file)
    order = alive[np.lexsort((c["row"][alive], c["file"][alive], c["version"][alive], c["pmid"][alive]))]
    winners = order[_last_of_runs(c["pmid"][order])]
    with_abstract = winners[c["has_abstract"][winners]] if not keep_without_abstract else winners
    kept = with_abstract[c["in_language"][with_abstract]]

    counts = {
        "citations_parsed": len(records),
        "deleted": int(removed.sum()),
        "superseded": len(alive) - len(winners),
        "without_abstract": len(winners) - len(with_abstract),
        "other_language": len(with_abstract) - len(kept),
        "written": len(kept),
    }
    selected = [np.sort(c["row"][kept][c["file"][kept] == index]) for index in range(len(parsed))]
    return selected, counts


def _last_of_runs(sorted_values: np.ndarray) -> np.ndarray:
    """True at the last element of each run of equal values."""
    return np.r_[sorted_values[1:] != sorted_values[:-1], True] if len(sorted_values) else np.zeros(0, dtype=bool)


def _output_table(path: Path, source_file: str, rows: np.ndarray) -> pa.Table:
    table = pq.read_table(path).take(pa.array(rows))
    title, abstract = table["title"].fill_null(""), table["abstract"].fill_null("")
    text = pc.if_else(pc.greater(pc.utf8_length(abstract), 0),
                      pc.binary_join_element_wise(title, abstract, "\n"), title)
    return table.append_column("text", text).append_column(
        "source_file", pa.array([source_file] * table.num_rows, pa.string()))


def dataset_card(summary: dict) -> str:
    """The dataset card (README.md) of a prepared PubMed folder: counts, files, filters, record rules, NLM's terms."""
    counts, baseline, updates = summary["counts"], summary["baseline_files"], summary["update_files"]
    languages = "every language" if ALL_LANGUAGES in summary["languages"] else ", ".join(summary["languages"])
    language_tag = "en" if summary["languages"] == ["eng"] else "multilingual"
    files = f"{len(baseline)} baseline file(s) ({baseline[0]} to {baseline[-1]})" if baseline else "no baseline file"
    files += f" and {len(updates)} update file(s) ({updates[0]} to {updates[-1]})" if updates else ""
    rows = "\n".join(f"| {name.replace('_', ' ')} | {value:,} |" for name, value in counts.items())
    return f"""---
license: other
license_name: nlm-terms-and-conditions
license_link: {NLM_TERMS}
language:
- {language_tag}
task_categories:
- fill-mask
pretty_name: PubMed titles and abstracts ({summary["baseline_year"]} baseline)
configs:
- config_name: default
  data_files:
  - split: train
    path: {DATA_DIR}/*.parquet
---

# PubMed titles and abstracts, {summary["baseline_year"]} baseline

Prepared on {summary["prepared_on"]} by `recipes/prepare_pubmed.py` (Clinical ModernBERT) from NCBI's PubMed XML
files: {files}, from https://ftp.ncbi.nlm.nih.gov/pubmed/. {counts["written"]:,} citations in
{summary["num_shards"]} Parquet shards (`{DATA_DIR}/`), one record per PMID.

| citations | count |
|---|---|
{rows}

- **Record rules**: a PMID in a `<DeleteCitation>` is removed with its records from that file and earlier ones; of
  the rest the highest `Version` wins, and among equal versions the record from the latest file (update files after
  baseline files, by file number). Book records (`PubmedBookArticle`) are not included.
- **Filters**: languages: {languages}; citations without an abstract
  {"kept" if summary["keep_without_abstract"] else "dropped"}.
- **Columns**: `pmid`, `text` (title, a newline, then the abstract; structured abstracts keep their section labels,
  e.g. `BACKGROUND: ...`), `title`, `abstract`, `year` (publication year), `language` (MEDLINE code),
  `publication_types`, `version`, `source_file`. Inline markup (`<i>`, `<sub>`, `<sup>`, MathML) is reduced to its text.

## Terms

PubMed data is provided by the U.S. National Library of Medicine (NLM) under its terms and conditions: {NLM_TERMS}.
NLM does not endorse this dataset; some abstracts are copyrighted by their publishers. The data reflects the files
listed above, not the current state of PubMed.
"""

