"""Every recipe's arguments: dataclasses parsed by `trl.TrlParser` from YAML with CLI overrides, each checked when
parsed. One module per recipe family; the shared lexicon arguments and checks live with pretraining's and in
`checks`."""

from .checks import check_probability, check_repo_id
from .corpora import PrepareMimicArguments, PreparePubmedArguments
from .embedded_assets import EmbeddedAssetArguments
from .evaluation import EVALUATION_SPLITS, EvaluationArguments
from .finetuning import FinetuneArguments, FinetuneTrainingArguments
from .pretraining import (
    ATTENTION_IMPLEMENTATIONS,
    EMBEDDED_PREFIX,
    MASKING_SCHEDULES,
    DataArguments,
    LexiconArguments,
    MaskingArguments,
    ModelArguments,
    PretrainTrainingArguments,
    SourceConfig,
    TrainingPhase,
    resolve_embedded,
)
from .publishing import PushArguments
from .vocabulary import DEFAULT_MIN_DOCUMENT_FREQUENCY, VOCABULARY_MODES, VocabularyArguments

__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "DEFAULT_MIN_DOCUMENT_FREQUENCY",
    "EMBEDDED_PREFIX",
    "EVALUATION_SPLITS",
    "MASKING_SCHEDULES",
    "VOCABULARY_MODES",
    "DataArguments",
    "EmbeddedAssetArguments",
    "EvaluationArguments",
    "FinetuneArguments",
    "FinetuneTrainingArguments",
    "LexiconArguments",
    "MaskingArguments",
    "ModelArguments",
    "PrepareMimicArguments",
    "PreparePubmedArguments",
    "PretrainTrainingArguments",
    "PushArguments",
    "SourceConfig",
    "TrainingPhase",
    "VocabularyArguments",
    "check_probability",
    "check_repo_id",
    "resolve_embedded",
]
