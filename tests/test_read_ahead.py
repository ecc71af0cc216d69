"""The read-ahead thread: same items in order, errors re-raised, the thread stops when the consumer stops."""

import threading

import pytest

from clinical_modernbert.data.read_ahead import read_ahead


def test_items_arrive_in_order():
    assert list(read_ahead(iter(range(1000)))) == list(range(1000))
    assert list(read_ahead(iter([]))) == []


def test_an_error_in_the_producer_is_raised_in_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise KeyError("no column 'text'")

    seen = []
    with pytest.raises(KeyError, match="no column 'text'"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_closing_the_consumer_stops_the_producer():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    before = set(threading.enumerate())
    consumer = read_ahead(items())
    assert [next(consumer) for _ in range(3)] == [0, 1, 2]
    [producer] = set(threading.enumerate()) - before
    consumer.close()
    producer.join(timeout=5)
    assert not producer.is_alive()
    assert len(produced) <= 3 + 2  # at most the queued item and the one being produced
