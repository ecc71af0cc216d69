"""MIMIC-IV-Note prepared once: PhysioNet's note CSV files (`note/discharge.csv.gz`, `note/radiology.csv.gz`) into
local Parquet shards of `note_id`, `note_type`, `text`.

The CSV files quote each note, which spans many lines and holds commas; they are read as such by pyarrow's CSV reader
(`newlines_in_values`). Text is kept as written: the de-identification placeholders (`___`) stay, and the masking
never chooses them (`masking.MedicalMaskingCollator`). The data is credentialed: the folder's card says so, and
`shards.push_dataset_dir` refuses it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

from ..configs import PrepareMimicArguments
from .shards import CARD, CREDENTIALED, DATA_DIR, write_shards

logger = logging.getLogger(__name__)

NOTE_COLUMNS = ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text")
KEPT_COLUMNS = ("note_id", "note_type", "text")
SCHEMA = pa.schema([(name, pa.string()) for name in KEPT_COLUMNS])
BLOCK_BYTES = 64 << 20  # CSV read block: a few thousand notes, one Parquet row group


def prepare_mimic(args: PrepareMimicArguments) -> dict:
    """Write the notes with text to `args.output_dir` (shards in `data/`, a dataset card); the summary."""
    paths = [Path(args.source) / name for name in args.note_files]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: --source must be the MIMIC-IV-Note folder from "
                                    "https://physionet.org/content/mimic-iv-note/ (holding note/discharge.csv.gz)")
    counts = {path.name: sum(batch.num_rows for batch in read_notes(path)) for path in paths}
    logger.info("Read: %s", ", ".join(f"{name} {n:,} notes" for name, n in counts.items()))
    tables = (batch for path in paths for batch in read_notes(path))
    write_shards(tables, sum(counts.values()), args.num_shards, args.output_dir, SCHEMA)
    summary = {"notes": counts, "num_shards": args.num_shards, "prepared_on": date.today().isoformat()}
    (Path(args.output_dir) / CARD).write_text(dataset_card(summary))
    return summary


def read_notes(path: str | Path) -> Iterator[pa.Table]:
    """The notes of one MIMIC-IV-Note CSV file (`.csv` or `.csv.gz`) with a non-empty text, a block at a time."""
    try:
        reader = csv.open_csv(
            pa.input_stream(str(path), compression="detect"),
            read_options=csv.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=csv.ParseOptions(newlines_in_values=True),
            convert_options=csv.ConvertOptions(column_types=dict.fromkeys(NOTE_COLUMNS, pa.string()),
                                               strings_can_be_null=False),
        )
    except pa.ArrowInvalid as err:
        raise ValueError(f"{path} is not a readable CSV file: {err}") from err
    missing = [name for name in KEPT_COLUMNS if name not in reader.schema.names]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}: a MIMIC-IV-Note file has {list(NOTE_COLUMNS)}")
    for batch in reader:
        table = pa.Table.from_batches([batch]).select(KEPT_COLUMNS)
        yield table.filter(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table["text"])), 0))


def dataset_card(summary: dict) -> str:
    """The card of a prepared MIMIC-IV-Note folder: credentialed, never redistributed."""
    rows = "\n".join(f"| `{name}` | {n:,} |" for name, n in summary["notes"].items())
    return f"""---
{CREDENTIALED}: true
license: other
license_name: physionet-credentialed-health-data-license-1.5.0
license_link: https://physionet.org/content/mimic-iv-note/view-license/2.2/
---

# MIMIC-IV-Note, prepared for pretraining: credentialed data, never redistributed

Prepared on {summary["prepared_on"]} by `recipes/prepare_mimic.py` (Clinical ModernBERT) from PhysioNet's
MIMIC-IV-Note files; {sum(summary["notes"].values()):,} notes in {summary["num_shards"]} Parquet shards
(`{DATA_DIR}/`, columns `note_id`, `note_type`, `text`).

| file | notes |
|---|---|
{rows}

**Access is credentialed** (PhysioNet Credentialed Health Data Use Agreement): this folder stays on the machine it
was prepared on. It is never uploaded, shared or redistributed; `push_dataset_dir` refuses it. The text is as
PhysioNet publishes it: de-identification placeholders (`___`) are kept and never chosen by the masking.
"""
