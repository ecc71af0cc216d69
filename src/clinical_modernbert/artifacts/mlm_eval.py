"""`mlm_eval_results.json` (`recipes/evaluate_mlm.py`): top-k masked-token accuracy and perplexity of a model, with the
data and masking they were measured on; the run's own held-out evaluation (`eval_results.json`) in the same form."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .run_facts import RunFacts
from .schema import JsonArtifact, check, is_count, is_number, is_object

MASK_ONLY = "mask_only_"  # prefix of the figures over positions whose input was the mask token
# the two sets of counted positions, as the results files and the model card describe them
COUNTED_POSITIONS = (
    "every position with a label: each token selected for masking, whether replaced by [MASK], replaced by a random "
    "token, or kept unchanged; special tokens and padding are never selected"
)
MASK_ONLY_POSITIONS = "the labelled positions whose input was [MASK] only: the answer is not in the input"
GROUPS = ("medical", "other")


@dataclass
class MlmEvalReport(JsonArtifact):
    """Figures in `metrics`: `top_<k>`, `num_positions`, `perplexity`, each also per token group (`medical_`,
    `other_`) and over `[MASK]` positions only (`mask_only_`)."""

    data: dict  # split (held_out | all), sources {name: {path, ...}}, max_seq_length, documents, rows, tokens
    masking: dict  # mlm_probability, seed, the replacement rates, the counted positions described
    top_k: list[int]
    metrics: dict[str, float]
    model: str | None = None  # what was evaluated; None for a run's own evaluation
    entities: dict | None = None  # with annotations: top-k inside/outside mentions per type, whole-mention recovery
    long_context: dict | None = None  # the long-context probe: top-k per context length

    @classmethod
    def from_held_out_eval(cls, facts: RunFacts, held_out: dict, path: str | os.PathLike) -> MlmEvalReport | None:
        """The run's own evaluation (`held_out`: the Trainer's `eval_results.json` at `path`, `eval_top_1`, ...) on
        the held-out rows of the run's sources, validated; None if it holds no top-k figures."""
        metrics = {key.removeprefix("eval_"): value for key, value in held_out.items() if key.startswith("eval_")}
        top_k = _ks_of(metrics)
        if not top_k:
            return None
        held_out_set = facts.held_out or {}
        return cls.from_json({
            "data": {
                "split": "held_out",
                "sources": {name: {"path": source} for name, source in facts.source_paths.items()},
                "max_seq_length": facts.max_seq_length,
                **{key: held_out_set.get(key) for key in ("documents", "rows", "tokens")},
            },
            "masking": {
                "mlm_probability": facts.masking["eval_mlm_probability"],
                "seed": facts.masking.get("eval_seed"),
                "counted_positions": COUNTED_POSITIONS,
                "mask_only_positions": MASK_ONLY_POSITIONS,
            },
            "top_k": top_k,
            "metrics": metrics,
        }, path)

    @property
    def dataset_name(self) -> str:
        """How the card names the evaluation data: its sources and split."""
        if self.data["split"] == "annotations":
            return f"{Path(self.data['sources']['annotations']['path']).name} (annotated documents)"
        split = "held-out documents" if self.data["split"] == "held_out" else "all documents"
        return f"{', '.join(self.data['sources'])} ({split})"

    @classmethod
    def problems(cls, data: dict) -> list[str]:
        """Data, masking, top_k and the metrics (overall, per group, [MASK] only) are there and consistent."""
        problems = []
        for key in ("data", "masking", "metrics"):
            check(problems, data, key, is_object, "an object")
        check(problems, data, "top_k", _is_k_list, "a non-empty increasing list of positive integers")
        if problems:
            return problems
        sources = data["data"].get("sources")
        entries = sources.values() if isinstance(sources, dict) else []
        if not entries or not all(isinstance(s, dict) and "path" in s for s in entries):
            problems.append(f"data.sources must name the evaluated sources with their path, got {sources!r}")
        check(problems, data["data"], "split", lambda v: isinstance(v, str) and v, "a non-empty string")
        check(problems, data["masking"], "mlm_probability", lambda v: is_number(v) and 0 < v < 1,
              "a number in (0, 1)")
        metrics = data["metrics"]
        check(problems, metrics, "num_positions", lambda v: is_count(v) and v > 0, "a positive integer")
        check(problems, metrics, "perplexity", lambda v: is_number(v) and v >= 1, "a number >= 1")
        _top_k_problems(problems, metrics, "", data["top_k"])
        if f"{MASK_ONLY}num_positions" in metrics:  # files written before the [MASK]-only figures lack them
            check(problems, metrics, f"{MASK_ONLY}num_positions", is_count, "a non-negative integer")
            if metrics[f"{MASK_ONLY}num_positions"]:
                _top_k_problems(problems, metrics, MASK_ONLY, data["top_k"])
        if data.get("long_context") is not None:
            problems.extend(f"long_context.{problem}"
                            for problem in _long_context_problems(data["long_context"], data["top_k"]))
        if data.get("entities") is not None:
            problems.extend(f"entities.{problem}" for problem in _entities_problems(data["entities"], data["top_k"]))
        for group in (*GROUPS, *(MASK_ONLY + g for g in GROUPS)):
            count = metrics.get(f"{group}_num_positions")
            if count is None:
                continue
            if not is_count(count):
                problems.append(f"metrics.{group}_num_positions must be a non-negative integer, got {count!r}")
            elif count:
                _top_k_problems(problems, metrics, f"{group}_", data["top_k"])
        return problems


def _top_k_problems(problems: list[str], metrics: dict, prefix: str, top_k: list[int],
                    where: str = "metrics.") -> None:
    """`metrics[prefix + "top_<k>"]` are accuracies that do not decrease with k; `where` names `metrics`."""
    values = [metrics.get(f"{prefix}top_{k}") for k in top_k]
    for k, value in zip(top_k, values):
        if not (is_number(value) and 0 <= value <= 1):
            problems.append(f"{where}{prefix}top_{k} must be a number in [0, 1], got {value!r}")
    if all(is_number(v) for v in values) and values != sorted(values):
        problems.append(f"{where}{prefix}top_k accuracies must not decrease as k grows, got {values}")


def _entities_problems(section, top_k: list[int]) -> list[str]:
    """The annotated documents' counts, the fixed-masking figures inside/outside mentions and per type, and the
    whole-mention recovery per type (see `entity_evaluation.entity_figures`)."""
    if not is_object(section):
        return [f"must be an object, got {section!r}"]
    problems = []
    check(problems, section, "annotations", lambda v: is_object(v) and isinstance(v.get("path"), str),
          "an object naming the annotation file's path")
    for key in ("documents", "rows", "tokens"):
        check(problems, section, key, is_count, "a non-negative integer")
    check(problems, section, "mentions", lambda v: is_object(v) and v and all(is_count(n) for n in v.values()),
          "a non-empty object of mention counts per entity type")
    for key in ("fixed_masking", "whole_mention"):
        check(problems, section, key, lambda v: is_object(v) and is_object(v.get("types")),
              "an object with figures per entity type ('types')")
    if problems:
        return problems
    types = sorted(section["mentions"])
    fixed, whole = section["fixed_masking"], section["whole_mention"]
    groups = [("fixed_masking.inside", fixed.get("inside")), ("fixed_masking.outside", fixed.get("outside")),
              ("whole_mention.all", whole.get("all"))]
    for key, part in (("fixed_masking", fixed), ("whole_mention", whole)):
        if sorted(part["types"]) != types:
            problems.append(f"{key}.types must hold the figures of exactly the entity types {types}, "
                            f"got {sorted(part['types'])}")
            return problems
        groups += [(f"{key}.types.{kind}", part["types"][kind]) for kind in types]
    for where, figures in groups:
        if not is_object(figures) or not is_count(figures.get("num_positions")):
            problems.append(f"{where} must hold figures with num_positions, got {figures!r}")
            continue
        for prefix in ("", MASK_ONLY):
            if figures.get(f"{prefix}num_positions"):
                _top_k_problems(problems, figures, prefix, top_k, where=f"{where}.")
        if where.startswith("whole_mention"):
            found: list[str] = []
            check(found, figures, "mentions", is_count, "a non-negative integer")
            check(found, figures, "all_tokens_top_1", lambda v: v is None or (is_number(v) and 0 <= v <= 1),
                  "a share in [0, 1] (or null for no mention)")
            problems.extend(f"{where}.{problem}" for problem in found)
    return problems


def _long_context_problems(section, top_k: list[int]) -> list[str]:
    """The probe's lengths, counts and, per kept length, accuracies for each k of `top_k` (see
    `long_context.LongContextProbe`)."""
    if not is_object(section):
        return [f"must be an object, got {section!r}"]
    problems = []
    check(problems, section, "context_lengths", _is_k_list, "a non-empty increasing list of positive integers")
    check(problems, section, "dropped_lengths", lambda v: v == [] or _is_k_list(v), "an increasing list of lengths")
    for key in ("documents", "probe_tokens", "positions"):
        check(problems, section, key, lambda v: is_count(v) and v > 0, "a positive integer")
    check(problems, section, "top_k", is_object, "an object of figures per context length")
    if problems:
        return problems
    lengths = [str(n) for n in section["context_lengths"]]
    if sorted(section["top_k"]) != sorted(lengths):
        return [f"top_k must hold the figures of exactly the context lengths {lengths}, got {list(section['top_k'])}"]
    for length in lengths:
        figures = section["top_k"][length]
        if not is_object(figures):
            problems.append(f"top_k.{length} must hold top_<k> accuracies for k in {top_k}, got {figures!r}")
            continue
        _top_k_problems(problems, figures, "", top_k, where=f"top_k.{length}.")
    return problems


def _ks_of(figures: dict) -> list[int]:
    """The k of the `top_<k>` keys of `figures`, increasing."""
    return sorted(int(match[1]) for key in figures if (match := re.fullmatch(r"top_(\d+)", key)))


def _is_k_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(is_count(k) and k > 0 for k in value) and (
        value == sorted(set(value))
    )
