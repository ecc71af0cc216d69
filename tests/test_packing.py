import random

import pytest

from clinical_modernbert.data.packing import BestFitPacker, Chunk, chunk_document, document_tensors, row_to_example


def test_long_document_is_split_into_chunks_not_truncated():
    ids = list(range(10, 35))
    flags = [0] * 4 + [1, 2, 2] + [0] * 18
    chunks = list(chunk_document(ids, flags, source=0, max_len=8, cls_id=1, sep_id=2))
    assert all(len(c) <= 8 and c.input_ids[0] == 1 and c.input_ids[-1] == 2 for c in chunks)
    assert [t for c in chunks for t in c.input_ids[1:-1]] == ids
    # the term cut at the border (positions 4..6 -> chunk 0 holds 4,5; chunk 1 holds 6) restarts as a term
    assert chunks[0].medical_mask[1:-1] == [0, 0, 0, 0, 1, 2]
    assert chunks[1].medical_mask[1] == 1


def _random_chunks(n, max_len, seed=0):
    rng = random.Random(seed)
    return [Chunk(list(range(k := rng.randint(3, max_len))), [0] * k, 0) for _ in range(n)]


def test_packer_keeps_every_chunk_once_and_respects_max_len():
    packer = BestFitPacker(max_len=128)
    chunks = _random_chunks(500, 128)
    rows = [row for c in chunks for row in packer.add(c)] + packer.flush()
    assert sorted(id(c) for row in rows for c in row) == sorted(id(c) for c in chunks)
    assert all(sum(map(len, row)) <= 128 for row in rows)


def test_packing_fills_rows_with_short_documents():
    packer = BestFitPacker(max_len=1024)
    chunks = _random_chunks(3000, 400, seed=1)
    rows = [row for c in chunks for row in packer.add(c)] + packer.flush()
    fill = sum(map(len, chunks)) / (1024 * len(rows))
    assert fill > 0.97


def test_no_packing_gives_one_document_per_row():
    packer = BestFitPacker(max_len=64, packing=False)
    assert [len(packer.add(c)) for c in _random_chunks(10, 64)] == [1] * 10


def test_packer_state_round_trip():
    packer = BestFitPacker(max_len=64)
    for c in _random_chunks(7, 30):
        packer.add(c)
    clone = BestFitPacker(max_len=64)
    clone.load_state(packer.state())
    assert clone.free == packer.free and [[c.input_ids for c in r] for r in clone.rows] == [
        [c.input_ids for c in r] for r in packer.rows
    ]


def test_document_tensors_restart_positions_per_document():
    document_ids, position_ids = document_tensors([[3, 2], [4]], seq_len=6)
    assert document_ids.tolist() == [[0, 0, 0, 1, 1, -1], [0, 0, 0, 0, -1, -1]]
    assert position_ids.tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]


def test_row_to_example_concatenates_documents():
    row = [Chunk([1, 5, 2], [0, 1, 0], 0), Chunk([1, 6, 7, 2], [0, 0, 0, 0], 1)]
    assert row_to_example(row) == {
        "input_ids": [1, 5, 2, 1, 6, 7, 2],
        "medical_mask": [0, 1, 0, 0, 0, 0, 0],
        "doc_lengths": [3, 4],
    }


def test_oversized_chunk_is_refused():
    with pytest.raises(ValueError, match="exceeds max_len"):
        BestFitPacker(max_len=4).add(Chunk([1, 2, 3, 4, 5], [0] * 5, 0))
