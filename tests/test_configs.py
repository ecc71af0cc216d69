"""Argument dataclasses: every recipe's arguments in `configs`, checked when parsed (before any data is read)."""

import pytest

from clinical_modernbert import configs
from clinical_modernbert.configs import EvaluationArguments, LexiconArguments, MaskingArguments
from clinical_modernbert.parsing import parse_recipe_args


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--mlm_probability_start", "1.5", "mlm_probability_start must be in"),
        ("--mlm_probability_end", "0", "mlm_probability_end must be in"),
        ("--eval_mlm_probability", "-0.1", "eval_mlm_probability must be in"),
        ("--mlm_schedule", "exponential", "mlm_schedule must be one of"),
        ("--medical_weight", "inf", "medical_weight must be a positive number"),
        ("--mask_replace_prob", "0.95", "add up to at most 1"),
    ],
)
def test_bad_masking_argument_fails_when_parsed(flag, value, message):
    with pytest.raises(ValueError, match=message):
        parse_recipe_args([MaskingArguments], args=[flag, value])


def test_lexicon_arguments_are_shared():
    for arguments in (MaskingArguments, EvaluationArguments):
        assert issubclass(arguments, LexiconArguments)
    assert MaskingArguments(lexicon_files=["a.txt"]).lexicon_files == ["a.txt"]


def test_every_argument_dataclass_lives_in_configs():
    names = [name for name in configs.__all__ if name.endswith("Arguments")]
    assert len(names) >= 10
    assert all(getattr(configs, name).__module__.startswith("clinical_modernbert.configs.") for name in names)
