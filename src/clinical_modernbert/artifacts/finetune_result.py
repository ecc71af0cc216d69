"""`finetune_results_<task>.json` (`recipes/finetune.py`): a checkpoint's downstream scores, mean ± std over seeds."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import JsonArtifact, check, is_number


@dataclass
class FinetuneResult(JsonArtifact):
    task: str
    split: str
    checkpoint: str
    metrics: dict[str, dict]  # per metric: mean, std (sample std over seeds), values
    task_type: str | None = None  # ner | classification
    data_file: str | None = None
    num_examples: int | None = None
    labels: list[str] | None = None
    seeds: list[int] | None = None
    train_loss: list[float] | None = None  # per seed
    data_notes: dict | None = None  # what reading the data repaired or split, counted
    settings: dict | None = None  # the fine-tuning arguments that set the scores

    @classmethod
    def problems(cls, data: dict) -> list[str]:
        problems = []
        for key in ("task", "split", "checkpoint"):
            check(problems, data, key, lambda v: isinstance(v, str) and v.strip(), "a non-empty string")
        metrics = data.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            problems.append(f"'metrics' must be a non-empty object of {{mean, std}}, got {metrics!r}")
        else:
            for name, value in metrics.items():
                if not (isinstance(value, dict) and all(is_number(value.get(k)) for k in ("mean", "std"))):
                    problems.append(f"metrics.{name} must hold numbers 'mean' and 'std', got {value!r}")
        return problems
