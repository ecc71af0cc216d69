"""The model card of a trained run: Hub metadata, sections filled from the run's own files, a training-curve plot.

Every number in the card is read from files in the model directory: `config.json`, the weights' header,
`run_facts.json` (written by `recipes/pretrain.py`), and, when present, the run's own evaluation of its held-out rows
(`eval_results.json`: loss, and top-k tables unless a separate evaluation exists), the MLM evaluation
(`recipes/evaluate_mlm.py`), the vocabulary report (`recipes/extend_tokenizer.py`, looked for in the model directory,
then in the local directory the run started from) and downstream results (`recipes/finetune.py`). A section whose file
is absent, and any figure the run did not measure, says "not measured".
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from .artifacts import (
    FINETUNE_RESULTS_FILE,
    HELD_OUT_EVAL_FILE,
    LONG_CONTEXT_PLOT_FILE,
    MASK_ONLY,
    MASK_ONLY_POSITIONS,
    MLM_EVAL_FILE,
    RUN_FACTS_FILE,
    TRAINING_CURVES_FILE,
    VOCABULARY_REPORT_FILE,
    FinetuneResult,
    MlmEvalReport,
    RunFacts,
    VocabularyReport,
    read_json,
)
from .artifacts.run_facts import SETTING_KEYS
from .assets import shipped_folder
from .plots import plot_long_context, plot_training_curves

logger = logging.getLogger(__name__)

TEMPLATE_FILE = "template.md"  # in the repository's model_card/ folder
TAGS = ["modernbert", "fill-mask", "masked-language-modeling", "biomedical", "clinical"]

@dataclass
class RunRecord:
    """What a model directory says about the run that produced it (validated)."""

    model_dir: Path
    config: PretrainedConfig
    mask_token: str
    parameters: int
    facts: RunFacts
    held_out_loss: float | None
    mlm_eval: MlmEvalReport | None  # recipes/evaluate_mlm.py's results, else the run's own top-k evaluation
    mlm_eval_file: str | None  # the file those results came from
    vocabulary: VocabularyReport | None
    finetune: list[FinetuneResult]


@dataclass
class RenderedCard:
    card: ModelCard
    images: dict[str, bytes]  # the plots the card shows, by file name (none for what was not measured)


def read_run(model_dir: str | Path) -> RunRecord:
    """Read and validate the files of `model_dir` the card is made from; raises naming the file and the problem."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"Model directory not found: {model_dir}")
    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type != "modernbert":
        raise ValueError(f"{model_dir}/config.json is a {config.model_type!r} model, not ModernBERT.")
    facts_path = model_dir / RUN_FACTS_FILE
    if not facts_path.is_file():
        raise FileNotFoundError(
            f"{facts_path} not found: the card reports what the run measured; train with recipes/pretrain.py."
        )
    facts = RunFacts.read(facts_path)
    held_out = read_json(model_dir / HELD_OUT_EVAL_FILE) if (model_dir / HELD_OUT_EVAL_FILE).is_file() else None
    mlm_eval = mlm_eval_file = vocabulary = None
    if (model_dir / MLM_EVAL_FILE).is_file():
        mlm_eval, mlm_eval_file = MlmEvalReport.read(model_dir / MLM_EVAL_FILE), MLM_EVAL_FILE
    elif held_out is not None:
        mlm_eval = MlmEvalReport.from_held_out_eval(facts, held_out, model_dir / HELD_OUT_EVAL_FILE)
        mlm_eval_file = HELD_OUT_EVAL_FILE if mlm_eval else None
    base_dir = Path(facts.base_model) if facts.base_model else None
    for directory in (model_dir, base_dir):
        if directory is not None and (directory / VOCABULARY_REPORT_FILE).is_file():
            vocabulary = VocabularyReport.read(directory / VOCABULARY_REPORT_FILE)
            break
    finetune = [FinetuneResult.read(path) for path in sorted(model_dir.glob(FINETUNE_RESULTS_FILE.format(task="*")))]
    return RunRecord(
        model_dir=model_dir,
        config=config,
        mask_token=AutoTokenizer.from_pretrained(model_dir).mask_token,
        parameters=count_parameters(model_dir),
        facts=facts,
        held_out_loss=held_out.get("eval_loss") if held_out else None,
        mlm_eval=mlm_eval,
        mlm_eval_file=mlm_eval_file,
        vocabulary=vocabulary,
        finetune=finetune,
    )


def count_parameters(model_dir: Path) -> int:
    """Number of weights stored in the directory's safetensors files (read from their headers)."""
    files = sorted(model_dir.glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"No safetensors weights (model.safetensors) in {model_dir}")
    total = 0
    for path in files:
        with safe_open(path, framework="pt") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return total


def card_template() -> str:
    """The card's Jinja template: `model_card/template.md`, shipped in the package."""
    return (shipped_folder("model_card") / TEMPLATE_FILE).read_text(encoding="utf-8")


def render_model_card(
    model_dir: str | Path, repo_id: str, license: str = "apache-2.0", language: str = "en"
) -> RenderedCard:
    """The model card (README.md) of `model_dir` for the Hub repo `repo_id`, and its plots (PNG): the training
    curves, and the long-context probe's when the evaluation ran it (drawn from the figures, as the card shows them)."""
    run = read_run(model_dir)
    images = {TRAINING_CURVES_FILE: plot_training_curves(run.facts.log_history or [])}
    if run.mlm_eval and run.mlm_eval.long_context:
        images[LONG_CONTEXT_PLOT_FILE] = plot_long_context(run.mlm_eval.long_context)
    images = {name: png for name, png in images.items() if png}
    context = card_context(run, repo_id, plot_file=TRAINING_CURVES_FILE if TRAINING_CURVES_FILE in images else None)
    card = ModelCard.from_template(card_data(run, repo_id, license, language), template_str=card_template(), **context)
    logger.info("Card: rendered for %s from %s", repo_id, run.model_dir)
    return RenderedCard(card=card, images=images)


def card_data(run: RunRecord, repo_id: str, license: str, language: str) -> ModelCardData:
    """The card's YAML metadata: license, language, datasets, base model, pipeline tag, model-index."""
    eval_results = []
    if run.mlm_eval:
        metrics, sources = run.mlm_eval.metrics, run.mlm_eval.data["sources"]
        common = {
            "task_type": "fill-mask",
            "task_name": "Masked language modeling",
            "dataset_type": "+".join(s["path"] if _hub_id(s["path"]) else name for name, s in sources.items()),
            "dataset_name": run.mlm_eval.dataset_name,
            "dataset_split": run.mlm_eval.data["split"],
        }
        eval_results = [
            EvalResult(**common, metric_type=f"top_{k}_accuracy", metric_name=f"Top-{k} accuracy",
                       metric_value=metrics[f"top_{k}"])
            for k in run.mlm_eval.top_k
        ]
        eval_results.append(EvalResult(**common, metric_type="perplexity", metric_name="Perplexity",
                                       metric_value=metrics["perplexity"]))
    datasets = sorted({p for p in run.facts.source_paths.values() if _hub_id(p)})
    base_model = run.facts.base_model
    return ModelCardData(
        license=license,
        language=language,
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=TAGS,
        base_model=base_model if base_model and _hub_id(base_model) else None,
        datasets=datasets or None,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )


def card_context(run: RunRecord, repo_id: str, plot_file: str | None) -> dict:
    """The values the template shows, all taken from `run` (None where the run measured nothing)."""
    config, facts = run.config, run.facts
    layer_types = list(config.layer_types)
    weights = facts.source_weights
    read = {name: (facts.sources or {}).get(name, {}) for name in weights}
    read_tokens = sum(counts.get("tokens", 0) for counts in read.values())
    read_documents = sum(counts.get("documents", 0) for counts in read.values())
    mixture = [
        {
            "name": name,
            "path": facts.source_paths.get(name),
            "weight_share": weights[name] / sum(weights.values()),
            "documents": read[name].get("documents"),
            "document_share": _ratio(read[name].get("documents"), read_documents),
            "tokens": read[name].get("tokens"),
            "token_share": _ratio(read[name].get("tokens"), read_tokens),
        }
        for name in weights
    ]
    counts = facts.masking_counts or {}
    return {
        "repo_id": repo_id,
        "mask_token": run.mask_token,
        "architecture": {
            "context_length": config.max_position_embeddings,
            "layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size,
            "heads": config.num_attention_heads,
            "global_layers": layer_types.count("full_attention"),
            "local_layers": layer_types.count("sliding_attention"),
            "window": config.local_attention,
            "activation": config.hidden_activation,
            "rope": {kind: params["rope_theta"] for kind, params in config.rope_parameters.items()},
            "vocab_size": config.vocab_size,
            "parameters": run.parameters,
        },
        "training": {
            **{key: getattr(facts, key) for key in SETTING_KEYS if key != "masking"},
            "steps": facts.steps,
            "tokens_trained": facts.tokens_trained,
            "from_scratch_config": facts.from_scratch_config,
            "tokens_per_step": _ratio(facts.tokens_trained, facts.steps),
            "held_out_loss": run.held_out_loss,
        },
        "phases": facts.phases or [],
        "mixture": mixture,
        "masking": {
            **facts.masking,
            "masked_fraction": _ratio(counts.get("masked"), counts.get("maskable")),
            "medical_share_maskable": _ratio(counts.get("medical_maskable"), counts.get("maskable")),
            "medical_share_masked": _ratio(counts.get("medical_masked"), counts.get("masked")),
        },
        "evaluation": _evaluation_context(run.mlm_eval, run.mlm_eval_file) if run.mlm_eval else None,
        "vocabulary": run.vocabulary,
        "finetune": [
            {"task": r.task, "split": r.split, "checkpoint": r.checkpoint, "metrics": r.metrics,
             "num_examples": r.num_examples, "seeds": len(r.seeds) if r.seeds else None}
            for r in run.finetune
        ],
        "plot_file": plot_file,
        "files": {"mlm_eval": MLM_EVAL_FILE, "held_out_eval": HELD_OUT_EVAL_FILE, "vocabulary": VOCABULARY_REPORT_FILE,
                  "finetune": FINETUNE_RESULTS_FILE.format(task="*")},
    }


def _evaluation_context(report: MlmEvalReport, file: str) -> dict:
    metrics = report.metrics
    groups = [("All tokens", "")] + [
        (f"{group.capitalize()} tokens", f"{group}_")
        for group in ("medical", "other")
        if f"{group}_num_positions" in metrics
    ]
    protocols = [
        ("All labelled positions", "", report.masking.get("counted_positions")),
        ("[MASK] positions only", MASK_ONLY, report.masking.get("mask_only_positions") or MASK_ONLY_POSITIONS),
    ]
    return {
        "dataset": report.dataset_name,
        "file": file,
        "run_own": file == HELD_OUT_EVAL_FILE,
        "documents": report.data.get("documents"),
        "rows": report.data.get("rows"),
        "tokens": report.data.get("tokens"),
        "mlm_probability": report.masking["mlm_probability"],
        "seed": report.masking.get("seed"),
        "top_k": report.top_k,
        "long_context": report.long_context and {**report.long_context, "plot_file": LONG_CONTEXT_PLOT_FILE},
        "entities": report.entities and _entities_context(report.entities, report.top_k),
        "protocols": [
            {
                "name": name,
                "counted_positions": counted,
                "perplexity": metrics.get(f"{protocol}perplexity"),
                "groups": [
                    {
                        "name": group_name,
                        "positions": metrics[f"{protocol}{prefix}num_positions"],
                        "top": {k: metrics.get(f"{protocol}{prefix}top_{k}") for k in report.top_k},
                    }
                    for group_name, prefix in groups
                ],
            }
            for name, protocol, counted in protocols
            if f"{protocol}num_positions" in metrics  # files written before the [MASK]-only figures lack them
        ],
    }


def _entities_context(section: dict, top_k: list[int]) -> dict:
    """The annotated evaluation as table rows: fixed masking per protocol and mention group, whole mentions per type."""
    fixed, whole = section["fixed_masking"], section["whole_mention"]
    groups = [("inside any mention", fixed["inside"]), ("outside every mention", fixed["outside"]),
              *((f"inside {kind} mentions", figures) for kind, figures in fixed["types"].items())]
    return {
        "file": Path(section["annotations"]["path"]).name,  # not the local folder it was read from
        "format": section["annotations"].get("format"),
        "documents": section["documents"],
        "tokens": section["tokens"],
        "mentions": section["mentions"],
        "fixed": [
            {"protocol": name, "group": group, "positions": figures[f"{protocol}num_positions"],
             "top": {k: figures.get(f"{protocol}top_{k}") for k in top_k}}
            for name, protocol in (("All labelled", ""), ("[MASK] only", MASK_ONLY))
            for group, figures in groups
            if f"{protocol}num_positions" in figures
        ],
        "whole": [
            {"type": kind, "mentions": figures["mentions"], "positions": figures["num_positions"],
             "top": {k: figures.get(f"top_{k}") for k in top_k}, "recovered": figures["all_tokens_top_1"],
             "not_scored": figures.get("mentions_across_windows")}
            for kind, figures in [("all types", whole["all"]), *whole["types"].items()]
        ],
    }


def _ratio(numerator, denominator) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def _hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub repo id (not a local path, not a `datasets` builder like `json`)."""
    if name in _PACKAGED_DATASETS_MODULES or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
