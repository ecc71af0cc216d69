"""Shared fixtures: offline mode, the `../shared` data folder, a tiny ModernBERT."""

import os
import shutil
import socket
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLINICAL_MODERNBERT_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(relative: str) -> Path:
    """A path under ../shared, or skip the test when that folder (or file) is absent (a fresh clone)."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared data folder), absent here")
    return path


@pytest.fixture(scope="session")
def embedded_tokenizer():
    from transformers import AutoTokenizer

    from clinical_modernbert.assets import EMBEDDED_TOKENIZER_DIR

    return AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR)


def tiny_config(tokenizer, **overrides):
    """A small ModernBertConfig (real architecture: RoPE, GeGLU, alternating local/global attention)."""
    from transformers import ModernBertConfig

    values = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        local_attention=16,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    values.update(overrides)
    return ModernBertConfig(**values)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny ModernBertForMaskedLM with the embedded tokenizer, saved like a Hub checkpoint."""
    import torch
    from transformers import AutoTokenizer, ModernBertForMaskedLM

    from clinical_modernbert.assets import EMBEDDED_TOKENIZER_DIR

    path = tmp_path_factory.mktemp("tiny-modernbert")
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR)
    torch.manual_seed(0)
    ModernBertForMaskedLM(tiny_config(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


SMOKE_CONFIG = REPO_ROOT / "recipes" / "configs" / "finetune_smoke.yaml"


def load_script(relative: str):
    """A script of the repository (a recipe, the Space's app.py) imported as a module, by its path."""
    import importlib.util

    path = REPO_ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_finetune_recipe(args: list[str]) -> dict:
    """`recipes/finetune.py` in-process (same parsing as the command line); its results as written to JSON."""
    from clinical_modernbert.finetuning import FinetuneArguments, FinetuneTrainingArguments
    from clinical_modernbert.parsing import parse_recipe_args

    arguments = parse_recipe_args([FinetuneArguments, FinetuneTrainingArguments], args=args)
    return load_script("recipes/finetune.py").main(*arguments).to_json()


def cpu_ddp_launcher() -> list[str]:
    """`accelerate launch` of two CPU DDP processes on a free port (skips when the CLI is absent)."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not on PATH")
    with socket.socket() as probe:  # a free rendezvous port: the default 29500 may be held by another run
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ["accelerate", "launch", "--config_file", str(REPO_ROOT / "recipes/accelerate_configs/cpu_ddp.yaml"),
            "--main_process_port", str(port)]
