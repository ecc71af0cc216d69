"""The files a run leaves behind: their names (`files`) and, for the JSON ones the model card reads, their schema as
typed dataclasses with validation (`RunFacts`, `MlmEvalReport`, `VocabularyReport`, `FinetuneResult`).

Training, evaluation, fine-tuning and vocabulary refinement write them; the model card and the push read them. This
package imports nothing of the training stack, so publishing does not load it.
"""

from .files import (
    ADDED_TOKENS_FILE,
    EVAL_SET_DIR,
    EVAL_SET_FINGERPRINT_FILE,
    FINETUNE_RESULTS_FILE,
    HELD_OUT_EVAL_FILE,
    LONG_CONTEXT_PLOT_FILE,
    MLM_EVAL_FILE,
    PHASE_DIR,
    RUN_FACTS_FILE,
    TRAINING_CURVES_FILE,
    VOCABULARY_REPORT_FILE,
    read_json,
    save_json,
)
from .finetune_result import FinetuneResult
from .mlm_eval import COUNTED_POSITIONS, MASK_ONLY, MASK_ONLY_POSITIONS, MlmEvalReport
from .run_facts import RunFacts
from .vocabulary_report import VocabularyReport

__all__ = [
    "ADDED_TOKENS_FILE", "COUNTED_POSITIONS", "EVAL_SET_DIR", "EVAL_SET_FINGERPRINT_FILE", "FINETUNE_RESULTS_FILE",
    "HELD_OUT_EVAL_FILE", "LONG_CONTEXT_PLOT_FILE", "MASK_ONLY", "MASK_ONLY_POSITIONS", "MLM_EVAL_FILE", "PHASE_DIR",
    "RUN_FACTS_FILE", "TRAINING_CURVES_FILE", "VOCABULARY_REPORT_FILE", "FinetuneResult", "MlmEvalReport", "RunFacts",
    "VocabularyReport", "read_json", "save_json",
]
