"""Arguments of `recipes/build_embedded_assets.py` (the embedded default's sample corpus and tokenizer)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EmbeddedAssetArguments:
    """How much sample text to write and the size of the tokenizer trained on it."""

    n_abstracts: int = field(default=1600, metadata={"help": "Sample abstracts written."})
    n_notes: int = field(default=800, metadata={"help": "Sample clinical notes written."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary of the byte-level BPE trained on them."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample text."})

    def __post_init__(self):
        for name in ("n_abstracts", "n_notes", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
