"""Model inputs that keep attention inside each packed document, for every attention backend.

ModernBERT has no built-in unpadding: under sdpa/eager/flex a packed row attends across documents unless it gets a
block-diagonal mask. Its forward accepts a mask per layer type, so we build the global layers' document mask and
the sliding layers' document-and-window mask with transformers' own mask factories. Under flash_attention_2 the
row is flattened and described by `cu_seq_lens` (as `DataCollatorWithFlattening` does).
"""

from __future__ import annotations

import torch
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_bidirectional_sliding_window_mask,
    packed_sequence_mask_function,
)


def packed_attention_inputs(config, document_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> dict:
    """Keyword arguments for `ModernBertModel.forward` that confine attention to each document.

    `document_ids` is (batch, seq) with one index per document and -1 on padding (padding attends to padding only).
    Returns `{"attention_mask": {layer_type: mask}}`, or the flash-attention varlen kwargs under flash_attention_2.
    """
    if config._attn_implementation == "flash_attention_2":
        return _flash_varlen_inputs(document_ids)
    embeds = torch.empty(*document_ids.shape, 0, dtype=dtype, device=document_ids.device)
    kwargs = {
        "config": config,
        "inputs_embeds": embeds,
        "attention_mask": None,
        "and_mask_function": packed_sequence_mask_function(document_ids),
    }
    return {
        "attention_mask": {
            "full_attention": create_bidirectional_mask(**kwargs),
            "sliding_attention": create_bidirectional_sliding_window_mask(**kwargs),
        }
    }


def _flash_varlen_inputs(document_ids: torch.Tensor) -> dict:
    """cu_seq_lens over the flattened batch: each document (and each row's padding) is its own sequence."""
    flat = document_ids.reshape(-1)
    row = torch.arange(document_ids.shape[0], device=flat.device).repeat_interleave(document_ids.shape[1])
    boundary = torch.ones_like(flat, dtype=torch.bool)
    boundary[1:] = (flat[1:] != flat[:-1]) | (row[1:] != row[:-1])
    starts = boundary.nonzero().squeeze(-1)
    cu = torch.cat([starts, torch.tensor([flat.numel()], device=flat.device)]).to(torch.int32)
    max_len = int((cu[1:] - cu[:-1]).max())
    # the 2D padding mask must go: with it, transformers unpads by padding and ignores cu_seq_lens
    return {
        "attention_mask": None,
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": max_len,
        "max_length_k": max_len,
    }
