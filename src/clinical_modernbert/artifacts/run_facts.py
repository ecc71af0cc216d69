"""`run_facts.json`: what a pretraining run was set up to do and what it measured about itself."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import JsonArtifact, check, is_count, is_number, is_object

# What the run was set up to do: every run of recipes/pretrain.py writes these, so a file without them is refused.
SETTING_KEYS = (
    "base_model", "global_batch_size", "max_seq_length", "packing", "attn_implementation", "precision",
    "learning_rate", "source_weights", "source_paths", "masking",
)
# What the run measured: absent or null, the card says "not measured".
MEASURED_KEYS = ("steps", "tokens_trained", "sources", "masking_counts", "log_history")
MASKING_KEYS = (
    "schedule", "mlm_probability_start", "mlm_probability_end", "eval_mlm_probability", "medical_weight",
    "whole_term_masking", "lexicon_terms",
)
PHASE_COUNTS = ("steps", "max_seq_length", "global_batch_size", "tokens_trained")


@dataclass
class RunFacts(JsonArtifact):
    """Written last by `recipes/pretrain.py` (its presence marks a finished run); for a run in phases, summed over
    them (`phases.combine_facts`)."""

    base_model: str | None  # the warm start; None when trained from scratch
    global_batch_size: int
    max_seq_length: int
    packing: bool
    attn_implementation: str
    precision: str
    learning_rate: float
    source_weights: dict[str, float]
    source_paths: dict[str, str]
    masking: dict  # MASKING_KEYS, and the evaluation's `eval_seed`
    from_scratch_config: str | None = None  # the model config trained from scratch ("embedded" or a file)
    steps: int | None = None
    tokens_trained: int | None = None  # non-padding tokens, summed over processes
    sources: dict[str, dict[str, int]] | None = None  # per source: documents, tokens, skipped, repaired
    masking_counts: dict[str, int] | None = None  # maskable, medical_maskable, masked, medical_masked
    held_out: dict[str, int] | None = None  # the held-out evaluation rows: documents, rows, tokens
    phases: list[dict] | None = None  # per phase: name, steps, max_seq_length, global_batch_size, tokens_trained
    log_history: list[dict] | None = None  # the Trainer's

    @classmethod
    def problems(cls, data: dict) -> list[str]:
        """Every setting the card reports is there with a usable value; a measurement may be absent or null."""
        problems = []
        missing = [key for key in SETTING_KEYS if key not in data]
        if missing:
            problems.append(f"missing key(s) {missing} (was it written by recipes/pretrain.py?)")
        optional = (*MEASURED_KEYS, "held_out", "phases", "from_scratch_config")
        present = {key: value for key, value in data.items() if key not in optional or value is not None}
        for key in ("steps", "global_batch_size", "max_seq_length", "tokens_trained"):
            check(problems, present, key, is_count, "a non-negative integer", required=False)
        for key in ("source_weights", "source_paths", "sources", "masking", "masking_counts", "held_out"):
            check(problems, present, key, is_object, "an object", required=False)
        check(problems, present, "log_history", lambda v: isinstance(v, list), "a list", required=False)
        check(problems, present, "phases", _is_phase_list, "a list of {name, steps, max_seq_length, "
              "global_batch_size, tokens_trained}", required=False)
        if isinstance(data.get("masking"), dict):
            missing = [key for key in MASKING_KEYS if key not in data["masking"]]
            if missing:
                problems.append(f"masking: missing key(s) {missing}")
        if isinstance(data.get("source_weights"), dict):
            for name, weight in data["source_weights"].items():
                if not (is_number(weight) and weight > 0):
                    problems.append(f"source_weights.{name} must be a positive number, got {weight!r}")
        return problems


def _is_phase_list(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, dict) and isinstance(p.get("name"), str) and all(is_count(p.get(k)) for k in PHASE_COUNTS)
        for p in value
    )
