import random

import pytest

from clinical_modernbert.data.packing import BestFitPacker, Chunk, chunk_document, document_tensors, row_to_example


def test_long_document_is_split_into_chunks_not_truncated():
    ids = list(range(10, 35))
    flags = [0] * 4 + [1, 2, 2] + [0] * 18
    chunks = list(chunk_document(ids, flags, source=0, max_len=8))
    assert all(len(c) <= 8 for c in chunks) and [len(c) for c in chunks] == [8, 8, 8, 8, 3]
    assert [t for c in chunks for t in c.input_ids] == ids
    # the term cut at the border (positions 4..6 -> chunk 0 holds 4,5; chunk 1 holds 6) restarts as a term
    assert chunks[0].term_flags == [0, 0, 0, 0, 1, 2]
    assert chunks[1].term_flags[0] == 1


def test_short_document_is_one_chunk():
    [chunk] = chunk_document([5, 6, 7], [1, 2, 0], source=3, max_len=5)
    assert (chunk.input_ids, chunk.term_flags, chunk.source, len(chunk)) == ([5, 6, 7], [1, 2, 0], 3, 5)


def _random_chunks(n, max_len, seed=0):
    rng = random.Random(seed)
    return [Chunk(list(range(k := rng.randint(1, max_len - 2))), [0] * k, 0) for _ in range(n)]


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


def _reference_best_fit(chunks, max_len, open_rows):
    """Best fit by linear scan: the tightest open row that fits, the oldest on a tie; when none fits and all rows are
    open, the fullest row goes out first."""
    rows, free, out = [], [], []
    for chunk in chunks:
        fits = [i for i, f in enumerate(free) if f >= len(chunk)]
        if fits:
            i = min(fits, key=free.__getitem__)
        else:
            if len(rows) >= open_rows:
                j = min(range(len(free)), key=free.__getitem__)
                out.append(rows.pop(j))
                free.pop(j)
            rows.append([])
            free.append(max_len)
            i = len(rows) - 1
        rows[i].append(chunk)
        free[i] -= len(chunk)
        if free[i] < 3:
            out.append(rows.pop(i))
            free.pop(i)
    order = sorted(range(len(rows)), key=free.__getitem__)
    return out + [rows[i] for i in order]


@pytest.mark.parametrize("max_len,open_rows,seed", [(128, 64, 0), (1024, 8, 1), (64, 2, 2)])
def test_packer_matches_linear_scan_best_fit(max_len, open_rows, seed):
    chunks = _random_chunks(2000, max_len, seed=seed)
    packer = BestFitPacker(max_len=max_len, open_rows=open_rows)
    rows = [row for c in chunks for row in packer.add(c)] + packer.flush()
    expected = _reference_best_fit(chunks, max_len, open_rows)
    assert [[id(c) for c in row] for row in rows] == [[id(c) for c in row] for row in expected]


def test_packer_state_round_trip():
    chunks = _random_chunks(40, 30)
    packer = BestFitPacker(max_len=64)
    for c in chunks[:7]:
        packer.add(c)
    clone = BestFitPacker(max_len=64)
    clone.load_state(packer.state())
    assert clone.state() == packer.state()

    def rest(p):
        rows = [row for c in chunks[7:] for row in p.add(c)] + p.flush()
        return [[c.input_ids for c in row] for row in rows]

    assert rest(clone) == rest(packer)


def test_document_tensors_restart_positions_per_document():
    document_ids, position_ids = document_tensors([[3, 2], [4]], seq_len=6)
    assert document_ids.tolist() == [[0, 0, 0, 1, 1, -1], [0, 0, 0, 0, -1, -1]]
    assert position_ids.tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]


def test_row_to_example_wraps_and_concatenates_documents():
    row = [Chunk([5], [1], 0), Chunk([6, 7], [0, 2], 1)]
    assert row_to_example(row, cls_id=1, sep_id=2) == {
        "input_ids": [1, 5, 2, 1, 6, 7, 2],
        "term_flags": [0, 1, 0, 0, 0, 2, 0],
        "doc_lengths": [3, 4],
    }


def test_oversized_chunk_is_refused():
    with pytest.raises(ValueError, match="exceeds max_len"):
        BestFitPacker(max_len=4).add(Chunk([1, 2, 3], [0] * 3, 0))
