"""A prepared corpus folder: Parquet shards that `load_dataset("parquet", ..., streaming=True)` and the Hub stream,
its dataset card, and its upload as a Hub dataset repository (refused for credentialed data).

Shards hold contiguous runs of rows, as equal in size as rows allow. `split_dataset_by_node` gives each of `world_size`
processes whole shards when `num_shards % world_size == 0` (else every process reads every shard and skips the rows
of the others), so the default of 64 shards serves 1, 2, 4, 8, 16, 32 or 64 processes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import CommitInfo, DatasetCard

from ..hub import UploadPlan, check_repo_id, push

logger = logging.getLogger(__name__)

DATA_DIR = "data"  # shards in <output_dir>/data/, beside the dataset card: the same layout locally and on the Hub
SPLIT = "train"
CARD = "README.md"
CREDENTIALED = "credentialed"  # a card metadata key: true for data that must never leave the machine


def shard_name(index: int, num_shards: int) -> str:
    return f"{SPLIT}-{index:05d}-of-{num_shards:05d}.parquet"


def write_shards(tables: Iterable[pa.Table], total_rows: int, num_shards: int, output_dir: str | Path,
                 schema: pa.Schema) -> list[Path]:
    """Write `total_rows` rows, arriving as `tables`, into `num_shards` Parquet files under `output_dir/data/`
    (former shards there are removed first); shard k holds rows [k*total/num_shards, (k+1)*total/num_shards)."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    folder = Path(output_dir) / DATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    ends = [total_rows * (k + 1) // num_shards for k in range(num_shards)]
    paths = [folder / shard_name(k, num_shards) for k in range(num_shards)]
    shard, written = 0, 0
    writer = pq.ParquetWriter(paths[0], schema)
    for table in tables:
        table = table.select(schema.names).cast(schema)
        while table.num_rows:
            while written == ends[shard] and shard < num_shards - 1:
                writer.close()
                shard += 1
                writer = pq.ParquetWriter(paths[shard], schema)
            take = min(table.num_rows, ends[shard] - written) if shard < num_shards - 1 else table.num_rows
            writer.write_table(table.slice(0, take))
            table, written = table.slice(take), written + take
    writer.close()
    for path in paths[shard + 1 :]:  # rows ran out before the last shards (fewer rows than shards)
        pq.ParquetWriter(path, schema).close()
    if written != total_rows:
        raise RuntimeError(f"Wrote {written} rows into {folder}, expected {total_rows}")
    logger.info("Save: %d rows in %d Parquet shards under %s", written, num_shards, folder)
    return paths


def push_dataset_dir(output_dir: str | Path, repo_id: str, private: bool = True) -> CommitInfo:
    """Upload a prepared folder's shards and card as a Hub dataset repository in one commit (private by default).
    A folder whose card marks it credentialed (MIMIC) is refused."""
    check_repo_id(repo_id)
    folder = Path(output_dir)
    card_path = folder / CARD
    if not card_path.is_file():
        raise FileNotFoundError(f"{card_path} is missing: prepare the corpus first (recipes/prepare_pubmed.py)")
    if DatasetCard.load(card_path).data.get(CREDENTIALED):
        raise ValueError(f"{folder} holds credentialed data (its card says `{CREDENTIALED}: true`): it is never "
                         "redistributed, so it is not pushed to the Hub.")
    files = {f"{DATA_DIR}/{path.name}": path for path in sorted((folder / DATA_DIR).glob("*.parquet"))}
    if not files:
        raise FileNotFoundError(f"No Parquet shards in {folder / DATA_DIR}: prepare the corpus first")
    return push(UploadPlan(repo_id, "dataset", {CARD: card_path, **files}), private=private)
