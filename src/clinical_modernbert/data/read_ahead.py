"""Running a generator one item ahead in a background thread.

The stream tokenizes the next block of documents while the current one is flagged and packed: the Rust tokenizer
releases the GIL, so the two overlap. (`torch` DataLoader workers overlap whole streams in processes; this overlaps the
stages of one stream.)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

_END = object()


def read_ahead(items: Iterator, depth: int = 1, poll_s: float = 0.1):
    """Yield the items of `items`, produced in a daemon thread up to `depth` items ahead; its errors re-raised here.

    Closing the returned generator (or dropping it) stops the thread after the item it is producing.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=poll_s)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((_END, None))
        except BaseException as error:  # handed to the consumer
            offer((_END, error))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
