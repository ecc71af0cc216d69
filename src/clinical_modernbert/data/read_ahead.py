"""Running a generator one item ahead in a background thread.

The stream tokenizes the next block of documents while the current one is flagged and packed: the Rust tokenizer
releases the GIL, so the two overlap. (`torch` DataLoader workers overlap whole streams in processes; this overlaps the
stages of one stream.)
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

_END = object()


def read_ahead(items: Iterator):
    """Yield the items of `items`, the next one produced in a worker thread meanwhile; its errors re-raised here.

    Closing the returned generator (or dropping it) stops the thread after the item it is producing.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, items, _END)
            yield item
