"""The streaming corpus: sources, mixture, tokenization with medical flags, packing."""
