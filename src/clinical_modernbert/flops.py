"""Model FLOPs of a ModernBERT MLM training step, counted from the config and the batch's attention pattern.

Counted: every matmul of the forward pass (2 FLOPs per multiply-add) times 3 for forward + backward. Attention
scores and weighted values are counted over the (query, key) pairs the mask allows: each query's own document in
global layers, and its document within the sliding window in local layers. Elementwise work (norms, activations,
softmax, RoPE) is not counted, as is usual for MFU.
"""

from __future__ import annotations

import torch


def attended_pairs(document_ids: torch.Tensor, window: int | None) -> int:
    """Number of allowed (query, key) pairs: same document (padding excluded), and |q - k| <= window if given."""
    total = 0
    for row in document_ids:
        lengths = torch.unique_consecutive(row[row >= 0], return_counts=True)[1].tolist()
        for n in lengths:
            if window is None or window >= n - 1:
                total += n * n
            else:  # n*n minus the two corners where |q - k| > window
                outside = n - window - 1
                total += n * n - outside * (outside + 1)
    return total


def training_flops(config, document_ids: torch.Tensor, n_predicted: int) -> int:
    """FLOPs of one forward + backward pass over a batch.

    `document_ids` is (batch, seq), -1 on padding; `n_predicted` is the number of positions that go through the
    MLM head (all real tokens, or only the masked ones with `sparse_prediction`).
    """
    h, inter, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    tokens = int((document_ids >= 0).sum())
    per_token_layer = 2 * (3 * h * h + h * h) + 2 * (h * 2 * inter + inter * h)  # Wqkv + Wo, GeGLU Wi + Wo
    linear = config.num_hidden_layers * per_token_layer * tokens
    pairs = {
        "full_attention": attended_pairs(document_ids, None),
        "sliding_attention": attended_pairs(document_ids, config.sliding_window),
    }
    attention = sum(2 * 2 * h * pairs[layer_type] for layer_type in config.layer_types)  # QK^T and AV
    head = n_predicted * (2 * h * h + 2 * h * vocab)
    return 3 * (linear + attention + head)
