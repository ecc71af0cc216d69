"""map_ahead: pairs in order, errors re-raised, one call ahead, the thread stops when the consumer stops."""

import threading

import pytest

from clinical_modernbert.data.map_ahead import map_ahead


def test_pairs_arrive_in_order():
    assert list(map_ahead(lambda x: x * x, range(1000))) == [(x, x * x) for x in range(1000)]
    assert list(map_ahead(str, [])) == []


def test_the_function_runs_in_a_worker_thread_one_item_ahead():
    calls = []

    def function(item):
        calls.append((item, threading.current_thread() is threading.main_thread()))
        return item

    consumer = map_ahead(function, range(10))
    assert next(consumer) == (0, 0)
    consumer.close()
    assert calls == [(0, False), (1, False)]  # item 1 was computed while item 0 was in use; no more


def test_an_error_in_the_function_is_raised_in_the_consumer_after_the_pairs_before_it():
    def function(item):
        if item == 2:
            raise KeyError("no column 'text'")
        return item

    seen = []
    with pytest.raises(KeyError, match="no column 'text'"):
        for pair in map_ahead(function, range(5)):
            seen.append(pair)
    assert seen == [(0, 0), (1, 1)]


def test_an_error_in_the_items_is_raised_after_the_pairs_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("bad source")

    seen = []
    with pytest.raises(ValueError, match="bad source"):
        for pair in map_ahead(lambda x: -x, items()):
            seen.append(pair)
    assert seen == [(1, -1)]  # item 2's call was in flight when the items failed


def test_closing_the_consumer_stops_the_worker():
    before = set(threading.enumerate())
    consumer = map_ahead(lambda x: x, iter(range(10_000)))
    assert [next(consumer) for _ in range(3)] == [(0, 0), (1, 1), (2, 2)]
    [worker] = set(threading.enumerate()) - before
    consumer.close()
    worker.join(timeout=5)
    assert not worker.is_alive()
