import importlib.util

import pytest
import torch
from conftest import shared_path, tiny_config
from tokenizers import Tokenizer
from transformers import BertConfig, BertForMaskedLM, ModernBertForMaskedLM, PreTrainedTokenizerFast

from clinical_modernbert.configs import ModelArguments
from clinical_modernbert.modeling import load_model, load_tokenizer, resolve_attn_implementation


@pytest.fixture(scope="module")
def hub_like_checkpoint(tmp_path_factory):
    """A local folder laid out like answerdotai/ModernBERT-base on the Hub: real tokenizer, small random weights."""
    tokenizer_dir = shared_path("modernbert-tokenizer")
    folder = tmp_path_factory.mktemp("ModernBERT-base")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    tokenizer.save_pretrained(folder)
    config = tiny_config(tokenizer, vocab_size=50368)  # ModernBERT pads 50,368 rows for 50,280 + added tokens
    ModernBertForMaskedLM(config).save_pretrained(folder)
    return folder


def test_warm_start_loads_every_weight(hub_like_checkpoint):
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(hub_like_checkpoint)))
    assert tokenizer.mask_token == "[MASK]" and len(tokenizer) == 50368
    model = load_model(ModelArguments(model_name_or_path=str(hub_like_checkpoint)), tokenizer)
    reference = ModernBertForMaskedLM.from_pretrained(hub_like_checkpoint)
    for (name, loaded), (_, saved) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(loaded, saved), name
    assert model.config._attn_implementation == "sdpa"


def test_warm_start_refuses_newly_initialised_weights(tmp_path, embedded_tokenizer):
    model = ModernBertForMaskedLM(tiny_config(embedded_tokenizer))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.save_pretrained(tmp_path, state_dict=state)
    with pytest.raises(ValueError, match=r"newly initialise .*head\.dense\.weight"):
        load_model(ModelArguments(model_name_or_path=str(tmp_path)), embedded_tokenizer)


def test_non_modernbert_checkpoint_is_refused(tmp_path, embedded_tokenizer):
    BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=37)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bert' checkpoint, not ModernBERT"):
        load_model(ModelArguments(model_name_or_path=str(tmp_path)), embedded_tokenizer)


def test_from_scratch_uses_tokenizer_vocabulary(embedded_tokenizer):
    model = load_model(ModelArguments(), embedded_tokenizer)
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= len(embedded_tokenizer)
    assert model.config.pad_token_id == embedded_tokenizer.pad_token_id
    assert set(model.config.layer_types) == {"full_attention", "sliding_attention"}


def test_attention_backend_choice():
    flash = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    assert resolve_attn_implementation("auto") == ("flash_attention_2" if flash else "sdpa")
    assert resolve_attn_implementation("eager") == "eager"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="flash-attn"):
            resolve_attn_implementation("flash_attention_2")


def test_unknown_attention_backend_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        ModelArguments(attn_implementation="fast")


def test_tokenizer_without_mask_token_is_refused(tmp_path, embedded_tokenizer):
    backend = Tokenizer.from_str(embedded_tokenizer.backend_tokenizer.to_str())
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has no mask, cls, sep, pad token"):
        load_tokenizer(ModelArguments(tokenizer_name_or_path=str(tmp_path)))
