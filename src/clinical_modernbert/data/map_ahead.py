"""`map` with the next item's function computed in a background thread.

The stream tokenizes the next block of documents while the current one is flagged and packed. The Rust tokenizer
releases the GIL, so the two overlap; everything else (reading documents, flags, packing) stays in the caller's
thread, so the worker never waits for the GIL while the tokenizer could run. (`torch` DataLoader workers overlap whole
streams in processes; this overlaps the stages of one stream.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor


def map_ahead(function: Callable, items: Iterable):
    """Yield `(item, function(item))` for each of `items`, in order; `function` of the next item runs in a worker
    thread meanwhile, and its errors are re-raised here. Items are drawn in the caller's thread.

    Closing the returned generator (or dropping it) waits for the call in flight and stops the thread.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="map-ahead") as pool:
        pending = None
        for item in items:
            future = pool.submit(function, item)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = item, future
        if pending is not None:
            yield pending[0], pending[1].result()
