"""Clinical ModernBERT: continued MLM pretraining of ModernBERT on biomedical and clinical text."""

__version__ = "0.1.0"
