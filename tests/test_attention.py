import pytest
import torch
from conftest import tiny_config
from transformers import ModernBertForMaskedLM

from clinical_modernbert.attention import _flash_varlen_inputs, packed_attention_inputs
from clinical_modernbert.data.packing import document_tensors


class _Vocab:  # tiny_config only needs these attributes
    pad_token_id, cls_token_id, sep_token_id = 0, 1, 2

    def __len__(self):
        return 300


@pytest.mark.parametrize("attn", ["sdpa", "eager", "flex_attention"])
def test_document_in_packed_row_has_its_logits_alone(attn):
    torch.manual_seed(0)
    config = tiny_config(_Vocab())
    config._attn_implementation = attn
    model = ModernBertForMaskedLM(config).eval()
    lengths = [37, 50, 21]  # longer than the sliding window (local_attention=16) so the window matters too
    docs = [torch.randint(3, 300, (n,)) for n in lengths]
    pad = 12
    row = torch.cat([*docs, torch.zeros(pad, dtype=torch.long)])[None]
    document_ids, position_ids = document_tensors([lengths], row.shape[1])
    with torch.no_grad():
        packed = model(
            input_ids=row, position_ids=position_ids, **packed_attention_inputs(model.config, document_ids)
        ).logits[0]
        unmasked = model(input_ids=row, position_ids=position_ids).logits[0]
        start = 0
        for doc in docs:
            alone = model(input_ids=doc[None]).logits[0]
            assert (packed[start : start + len(doc)] - alone).abs().max() <= 1e-4
            start += len(doc)
    # without the document mask the same row leaks attention across documents
    assert (unmasked[: lengths[0]] - packed[: lengths[0]]).abs().max() > 1e-3


def test_flash_varlen_kwargs_describe_every_document_and_padding():
    document_ids = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 0, 0, 0, 0, 0]])
    kwargs = _flash_varlen_inputs(document_ids)
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 3, 5, 6, 12]
    assert kwargs["max_length_q"] == 6
    assert kwargs["attention_mask"] is None
