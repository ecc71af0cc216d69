"""`evaluate` modules shipped with the package, loaded offline by path: `evaluate.load(MLM_TOPK_ACCURACY)`."""

from pathlib import Path

MLM_TOPK_ACCURACY = str(Path(__file__).parent / "mlm_topk_accuracy")
