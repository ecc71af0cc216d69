"""Reading the corpus sources as `datasets` streams: Hub datasets or local files, one text column each."""

from __future__ import annotations

import glob
import json
import logging
import re
import string
from collections.abc import Iterator

import fsspec
import pandas as pd
import pyarrow as pa
from datasets import Features, IterableDataset, Value, load_dataset
from datasets.exceptions import DatasetNotFoundError

from ..configs import SourceConfig

logger = logging.getLogger(__name__)

LOCAL_BUILDERS = ("json", "csv", "text", "parquet")
# datasets' json builder decodes with `encoding_errors` only when `encoding` is not spelled "utf-8"
LOCAL_READ_OPTIONS = {
    "json": {"encoding": "utf8", "encoding_errors": "replace"},
    "csv": {"encoding_errors": "replace", "keep_default_na": False},
    "text": {"encoding_errors": "replace"},
    "parquet": {},
}


def load_source(source: SourceConfig) -> IterableDataset:
    """Stream one source with `load_dataset(..., streaming=True)`, invalid UTF-8 in local files replaced."""
    kwargs = {}
    if source.path in LOCAL_BUILDERS:
        files = _patterns(source)
        if not files:
            raise ValueError(f"Source {source.name!r}: builder {source.path!r} needs data_files")
        for pattern in files:
            if not glob.glob(pattern):
                raise FileNotFoundError(f"Source {source.name!r}: no file matches {pattern!r}")
        kwargs = dict(LOCAL_READ_OPTIONS[source.path])
        if source.delimiter is not None:
            kwargs["delimiter"] = source.delimiter
        if source.path == "csv":
            kwargs["features"] = _string_features(glob.glob(files[0])[0], source.delimiter or ",")
    try:
        stream = load_dataset(
            source.path, source.config_name, data_files=source.data_files, split=source.split, streaming=True, **kwargs
        )
        first = next(iter(stream))
    except StopIteration:  # raised by load_dataset itself when a local file is empty
        raise ValueError(f"Source {source.name!r} yields no documents") from None
    except pa.ArrowInvalid as e:
        raise _unparsable(e, [source]) from e
    except DatasetNotFoundError as e:
        raise ValueError(f"Source {source.name!r}: {e}") from e
    except RuntimeError as e:
        if "Dataset scripts are no longer supported" not in str(e):
            raise
        raise ValueError(
            f"Source {source.name!r}: the Hub repository {source.path!r} holds only a loading script, which `datasets` "
            f"no longer runs ({e}). Prepare the corpus into Parquet once and point `path: parquet` + `data_files` (or "
            "the pushed Hub id) at it; for PubMed that is recipes/prepare_pubmed.py."
        ) from e
    columns = set(stream.features) if stream.features is not None else set(first)
    needed = _template_fields(source.template) if source.template else [source.text_field]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"Source {source.name!r} has no column(s) {missing}; available columns: {sorted(columns)}")
    if source.template is not None:
        _check_template_on(source, first)
    return stream


def _check_template_on(source: SourceConfig, row: dict) -> None:
    """A ValueError naming the source if its template cannot fill the first row or fills it with only spaces."""
    values = {k: row.get(k) for k in _template_fields(source.template)}
    try:
        text = source.template.format(**values)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise ValueError(f"Source {source.name!r}: template {source.template!r} cannot format the first row "
                         f"({type(err).__name__}: {err}); its columns: {sorted(row)}") from None
    if not text.strip():
        raise ValueError(f"Source {source.name!r}: template {source.template!r} formats the first row to empty text; "
                         f"check the template against its columns {sorted(row)}")


def next_row(rows: Iterator[dict], sources: list[SourceConfig]) -> dict | None:
    """`next(rows, None)`, with a JSON line that cannot be parsed named by file and line (pyarrow names neither)."""
    try:
        return next(rows, None)
    except pa.ArrowInvalid as e:
        raise _unparsable(e, sources) from e


def _unparsable(error: Exception, sources: list[SourceConfig]) -> Exception:
    """A ValueError naming the source, file and line of the first invalid JSON line; `error` if none is found."""
    for source in sources:
        if source.path != "json":
            continue
        for path in local_files(source):
            with fsspec.open(path, "rt", compression="infer", encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, start=1):
                    try:
                        json.loads(line) if line.strip() else None
                    except json.JSONDecodeError as e:
                        return ValueError(f"Source {source.name!r}: {path} line {number} is not valid JSON ({e}); "
                                          "fix or remove that line (one JSON object per line)")
    return error


def local_files(source: SourceConfig) -> list[str]:
    """The files a local source reads (its `data_files` patterns expanded, sorted); [] for a Hub dataset."""
    if source.path not in LOCAL_BUILDERS:
        return []
    return sorted({path for pattern in _patterns(source) for path in glob.glob(pattern)})


def _patterns(source: SourceConfig) -> list[str]:
    return [source.data_files] if isinstance(source.data_files, str) else list(source.data_files or [])


def format_text(source: SourceConfig, row: dict) -> object:
    """The document text of a row: its `text_field`, or `template` filled from the row (None if a field is None)."""
    if source.template is None:
        return row.get(source.text_field)
    values = {k: row.get(k) for k in _template_fields(source.template)}
    if any(v is None for v in values.values()):
        return None
    try:
        return source.template.format(**values)
    except (KeyError, IndexError, TypeError):  # a nested field missing in this row
        return None


def format_texts(source: SourceConfig, batch: dict[str, list]) -> list:
    """`format_text` over a batch of rows given as columns."""
    n = len(next(iter(batch.values()), []))
    if source.template is None:
        return list(batch.get(source.text_field, [None] * n))
    return [format_text(source, {k: column[j] for k, column in batch.items()}) for j in range(n)]


def _template_fields(template: str) -> list[str]:
    """Column names a template reads (`{MedlineCitation[Article][ArticleTitle]}` reads `MedlineCitation`)."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return list(dict.fromkeys(re.split(r"[.\[]", name, maxsplit=1)[0] for name in names))


def _string_features(path: str, delimiter: str) -> Features:
    """Every csv column as a string, so that codes keep their digits ("250.00", not 250.0)."""
    header = pd.read_csv(path, sep=delimiter, nrows=0, encoding_errors="replace")
    return Features({name: Value("string") for name in header.columns})
