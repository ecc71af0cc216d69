"""Building the ModernBERT MLM model and its tokenizer: warm start, from scratch, attention backend."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, ModernBertConfig, ModernBertForMaskedLM, PreTrainedTokenizerBase

from .assets import EMBEDDED_MODEL_CONFIG, EMBEDDED_TOKENIZER_DIR
from .configs import ModelArguments

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
EMBEDDING_PAD_MULTIPLE = 64  # ModernBERT pads its embedding matrix to a multiple of 64 (50,280 -> 50,368)


def resolve_attn_implementation(requested: str = "auto") -> str:
    """Pick the attention backend: flash_attention_2 on CUDA when installed, else sdpa; explicit values win."""
    if requested != "auto":
        if requested == "flash_attention_2" and not is_flash_attn_available():
            raise ValueError("attn_implementation=flash_attention_2 needs CUDA and flash-attn (`pip install .[gpu]`).")
        return requested
    return "flash_attention_2" if is_flash_attn_available() else "sdpa"


def is_flash_attn_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def load_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerBase:
    """The tokenizer named in the arguments, else the checkpoint's, else the embedded sample tokenizer."""
    setting = "tokenizer_name_or_path" if model_args.tokenizer_name_or_path else "model_name_or_path"
    name = model_args.tokenizer_name_or_path or model_args.model_name_or_path or str(EMBEDDED_TOKENIZER_DIR)
    folder = Path(name)
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(f"{setting}: the folder {name} holds no tokenizer ({' or '.join(TOKENIZER_FILES)}); "
                                "give the tokenizer with --tokenizer_name_or_path")
    tokenizer = _from_pretrained(AutoTokenizer, name, setting)
    missing = [t for t in ("mask", "cls", "sep", "pad") if getattr(tokenizer, f"{t}_token") is None]
    if missing:
        raise ValueError(f"Tokenizer {name!r} has no {', '.join(missing)} token; ModernBERT's masked language "
                         "modelling needs [CLS], [SEP], [PAD] and [MASK]: use a tokenizer that defines them.")
    return tokenizer


def _from_pretrained(cls, name: str, setting: str, **kwargs):
    """`cls.from_pretrained(name)`, or an OSError naming the setting when `name` is neither a folder nor a Hub id."""
    if not Path(name).is_dir() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise FileNotFoundError(f"{setting}: the folder {name} does not exist; give an existing model folder or a "
                                "Hub id such as answerdotai/ModernBERT-base")
    if cls is AutoConfig and Path(name).is_dir() and not (Path(name) / "config.json").is_file():
        raise FileNotFoundError(f"{setting}: the folder {name} holds no config.json; give a saved model folder "
                                "(save_pretrained) or a Hub id")
    try:
        return cls.from_pretrained(name, **kwargs)
    except OSError as err:
        reason = str(err).strip().splitlines()[0]
        raise OSError(f"{setting}: {name!r} is not a local folder and could not be loaded from the Hub ({reason}); "
                      "give an existing model folder or a reachable Hub id") from err


def load_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> ModernBertForMaskedLM:
    """Warm-start from `model_name_or_path` (every weight must load) or build from `model_config`.

    If the tokenizer has more tokens than the embedding matrix, the matrix is resized (padded to a multiple of 64)
    and the added rows are initialised as the mean of the existing ones; those are the only new weights allowed.
    The tokenizer's `model_max_length` becomes the model's `max_position_embeddings` (saved with it, so that
    `truncation=True` cuts where the model must; a tokenizer trained here would otherwise say 1e30).
    """
    attn = resolve_attn_implementation(model_args.attn_implementation)
    if model_args.model_name_or_path:
        model = _warm_start(model_args.model_name_or_path, attn)
    else:
        config_path, config = _scratch_config(model_args)
        config.vocab_size = _padded(len(tokenizer))
        config.pad_token_id, config.cls_token_id, config.sep_token_id = (
            tokenizer.pad_token_id,
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
        )
        config.bos_token_id, config.eos_token_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        config._attn_implementation = attn
        model = ModernBertForMaskedLM(config)
        logger.info("Model: ModernBERT from scratch (%s), %.1fM parameters", config_path.name, _millions(model))
    model.config.sparse_prediction = model.sparse_prediction = model_args.sparse_prediction
    if len(tokenizer) > model.config.vocab_size:
        old = model.config.vocab_size
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=EMBEDDING_PAD_MULTIPLE, mean_resizing=True)
        logger.info("Model: embedding matrix resized %d -> %d rows for the tokenizer", old, model.config.vocab_size)
    tokenizer.model_max_length = model.config.max_position_embeddings
    logger.info("Model: attention implementation %s, up to %d positions", attn, tokenizer.model_max_length)
    return model


def check_max_seq_length(model_args: ModelArguments, max_seq_length: int, setting: str = "max_seq_length") -> None:
    """A ValueError, before any data is read, if rows of `max_seq_length` exceed the model's positions."""
    if model_args.model_name_or_path:
        config, name = _from_pretrained(AutoConfig, model_args.model_name_or_path, "model_name_or_path"), "model"
    else:
        config_path, config = _scratch_config(model_args)
        name = "model config"
    positions = config.max_position_embeddings
    if max_seq_length > positions:
        where = model_args.model_name_or_path or config_path
        raise ValueError(f"{setting}={max_seq_length} exceeds the {name}'s max_position_embeddings={positions} "
                         f"({where}); set {setting} to at most {positions}")


def _scratch_config(model_args: ModelArguments) -> tuple[Path, ModernBertConfig]:
    config_path = Path(model_args.model_config or EMBEDDED_MODEL_CONFIG)
    if not config_path.is_file():
        raise FileNotFoundError(f"model_config: file not found: {config_path}")
    return config_path, ModernBertConfig.from_json_file(str(config_path))


def _warm_start(name_or_path: str, attn: str) -> ModernBertForMaskedLM:
    config = _from_pretrained(AutoConfig, name_or_path, "model_name_or_path")
    if config.model_type != "modernbert":
        raise ValueError(
            f"{name_or_path!r} is a {config.model_type!r} checkpoint, not ModernBERT (model_type 'modernbert')."
        )
    model, info = ModernBertForMaskedLM.from_pretrained(
        name_or_path, attn_implementation=attn, output_loading_info=True, dtype=torch.float32
    )
    new = sorted(set(info["missing_keys"]) | {k for k, *_ in info.get("mismatched_keys", [])})
    if new:
        raise ValueError(
            f"Warm start from {name_or_path!r} would newly initialise {len(new)} weight(s): {', '.join(new)}. "
            "Is this a ModernBertForMaskedLM checkpoint?"
        )
    logger.info("Model: warm start from %s, every weight loaded, %.1fM parameters", name_or_path, _millions(model))
    return model


def _padded(n: int) -> int:
    return -(-n // EMBEDDING_PAD_MULTIPLE) * EMBEDDING_PAD_MULTIPLE


def _millions(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6
