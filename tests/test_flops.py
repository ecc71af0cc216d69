import torch
from transformers import ModernBertConfig

from clinical_modernbert.flops import attended_pairs, training_flops


def brute_force_pairs(document_ids, window):
    total = 0
    for row in document_ids.tolist():
        for q, dq in enumerate(row):
            for k, dk in enumerate(row):
                total += dq >= 0 and dq == dk and (window is None or abs(q - k) <= window)
    return total


def test_attended_pairs_match_brute_force():
    document_ids = torch.tensor([[0] * 9 + [1] * 3 + [2] * 14 + [-1] * 4, [0] * 30])
    for window in (None, 0, 2, 5, 40):
        assert attended_pairs(document_ids, window) == brute_force_pairs(document_ids, window)


def test_training_flops_by_hand():
    config = ModernBertConfig(hidden_size=8, intermediate_size=12, num_hidden_layers=3, num_attention_heads=2,
                              vocab_size=64, local_attention=4)  # layers: global, sliding, sliding; window 2
    document_ids = torch.tensor([[0, 0, 0, 0, 0, 1, 1, -1]])
    tokens = 7
    linear = 3 * (2 * 4 * 8 * 8 + 2 * 3 * 8 * 12) * tokens
    full_pairs, sliding_pairs = 5 * 5 + 2 * 2, (25 - 2 * 3) + 4  # window 2 drops |q-k| in {3, 4}: 2*(2+1) pairs
    attention = 4 * 8 * (full_pairs + 2 * sliding_pairs)
    head = 3 * (2 * 8 * 8 + 2 * 8 * 64)
    assert training_flops(config, document_ids, n_predicted=3) == 3 * (linear + attention + head)
