"""The model card of a trained run: Hub metadata, sections filled from the run's own files, a training-curve plot.

Every number in the card is read from files in the model directory: `config.json`, the weights' header,
`run_facts.json` (written by `recipes/pretrain.py`), and, when present, the run's own evaluation of its held-out rows
(`eval_results.json`: loss, and top-k tables unless a separate evaluation exists), the MLM evaluation
(`recipes/evaluate_mlm.py`), the vocabulary report (`recipes/extend_tokenizer.py`, looked for in the model directory,
then in the local directory the run started from) and downstream results (`recipes/finetune.py`). A section whose file
is absent, and any figure the run did not measure, says "not measured".
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from matplotlib.figure import Figure
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from .artifacts import (
    FINETUNE_RESULTS_FILE,
    HELD_OUT_EVAL_FILE,
    MLM_EVAL_FILE,
    RUN_FACTS_FILE,
    TRAINING_CURVES_FILE,
    VOCABULARY_REPORT_FILE,
)
from .assets import shipped_folder
from .metrics.mlm_topk_accuracy.mlm_topk_accuracy import COUNTED_POSITIONS, MASK_ONLY, MASK_ONLY_POSITIONS

logger = logging.getLogger(__name__)

TEMPLATE_FILE = "template.md"  # in the repository's model_card/ folder
TAGS = ["modernbert", "fill-mask", "masked-language-modeling", "biomedical", "clinical"]

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


@dataclass
class RunRecord:
    """What a model directory says about the run that produced it (validated)."""

    model_dir: Path
    config: PretrainedConfig
    mask_token: str
    parameters: int
    facts: dict
    held_out_loss: float | None
    mlm_eval: dict | None  # recipes/evaluate_mlm.py's results, else the run's own top-k evaluation in the same form
    mlm_eval_file: str | None  # the file those results came from
    vocabulary: dict | None
    finetune: list[dict]


@dataclass
class RenderedCard:
    card: ModelCard
    plot_png: bytes | None  # None when the run logged no loss


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
    facts = _read_json(facts_path)
    validate_run_facts(facts, facts_path)
    held_out = _read_json(model_dir / HELD_OUT_EVAL_FILE) if (model_dir / HELD_OUT_EVAL_FILE).is_file() else None
    mlm_eval = mlm_eval_file = vocabulary = None
    if (model_dir / MLM_EVAL_FILE).is_file():
        mlm_eval, mlm_eval_file = _read_json(model_dir / MLM_EVAL_FILE), MLM_EVAL_FILE
    elif held_out is not None:
        mlm_eval = held_out_report(facts, held_out)
        mlm_eval_file = HELD_OUT_EVAL_FILE if mlm_eval else None
    if mlm_eval:
        validate_mlm_eval(mlm_eval, model_dir / mlm_eval_file)
    base_dir = Path(facts["base_model"]) if facts["base_model"] else None
    for directory in (model_dir, base_dir):
        if directory is not None and (directory / VOCABULARY_REPORT_FILE).is_file():
            vocabulary = _read_json(directory / VOCABULARY_REPORT_FILE)
            validate_vocabulary_report(vocabulary, directory / VOCABULARY_REPORT_FILE)
            break
    finetune = []
    for path in sorted(model_dir.glob(FINETUNE_RESULTS_FILE.format(task="*"))):
        result = _read_json(path)
        validate_finetune_result(result, path)
        finetune.append(result)
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


def held_out_report(facts: dict, held_out: dict) -> dict | None:
    """The run's own evaluation (the Trainer's `eval_results.json`: `eval_top_1`, ...) in the form of the results
    file of `recipes/evaluate_mlm.py`, on the held-out rows of the run's sources; None if it holds no top-k figures."""
    metrics = {key.removeprefix("eval_"): value for key, value in held_out.items() if key.startswith("eval_")}
    top_k = sorted(int(match[1]) for key in metrics if (match := re.fullmatch(r"top_(\d+)", key)))
    if not top_k:
        return None
    held_out_set = facts.get("held_out") or {}
    return {
        "data": {
            "split": "held_out",
            "sources": {name: {"path": path} for name, path in facts["source_paths"].items()},
            "max_seq_length": facts["max_seq_length"],
            **{key: held_out_set.get(key) for key in ("documents", "rows", "tokens")},
        },
        "masking": {
            "mlm_probability": facts["masking"]["eval_mlm_probability"],
            "seed": facts["masking"].get("eval_seed"),
            "counted_positions": COUNTED_POSITIONS,
            "mask_only_positions": MASK_ONLY_POSITIONS,
        },
        "top_k": top_k,
        "metrics": metrics,
    }


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
    """The model card (README.md) of `model_dir` for the Hub repo `repo_id`, and its training-curve plot (PNG)."""
    run = read_run(model_dir)
    plot = plot_training_curves(run.facts.get("log_history") or [])
    context = card_context(run, repo_id, plot_file=TRAINING_CURVES_FILE if plot else None)
    card = ModelCard.from_template(card_data(run, repo_id, license, language), template_str=card_template(), **context)
    logger.info("Card: rendered for %s from %s", repo_id, run.model_dir)
    return RenderedCard(card=card, plot_png=plot)


def card_data(run: RunRecord, repo_id: str, license: str, language: str) -> ModelCardData:
    """The card's YAML metadata: license, language, datasets, base model, pipeline tag, model-index."""
    eval_results = []
    if run.mlm_eval:
        metrics, sources = run.mlm_eval["metrics"], run.mlm_eval["data"]["sources"]
        common = {
            "task_type": "fill-mask",
            "task_name": "Masked language modeling",
            "dataset_type": "+".join(s["path"] if _hub_id(s["path"]) else name for name, s in sources.items()),
            "dataset_name": evaluation_name(run.mlm_eval),
            "dataset_split": run.mlm_eval["data"]["split"],
        }
        eval_results = [
            EvalResult(**common, metric_type=f"top_{k}_accuracy", metric_name=f"Top-{k} accuracy",
                       metric_value=metrics[f"top_{k}"])
            for k in run.mlm_eval["top_k"]
        ]
        eval_results.append(EvalResult(**common, metric_type="perplexity", metric_name="Perplexity",
                                       metric_value=metrics["perplexity"]))
    datasets = sorted({p for p in run.facts["source_paths"].values() if _hub_id(p)})
    base_model = run.facts["base_model"]
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


def evaluation_name(report: dict) -> str:
    """How the card names the evaluation data: its sources and split."""
    split = "held-out documents" if report["data"]["split"] == "held_out" else "all documents"
    return f"{', '.join(report['data']['sources'])} ({split})"


def card_context(run: RunRecord, repo_id: str, plot_file: str | None) -> dict:
    """The values the template shows, all taken from `run` (None where the run measured nothing)."""
    config, facts = run.config, run.facts
    layer_types = list(config.layer_types)
    weights = facts["source_weights"]
    read = {name: (facts.get("sources") or {}).get(name, {}) for name in weights}
    read_tokens = sum(counts.get("tokens", 0) for counts in read.values())
    read_documents = sum(counts.get("documents", 0) for counts in read.values())
    mixture = [
        {
            "name": name,
            "path": facts["source_paths"].get(name),
            "weight_share": weights[name] / sum(weights.values()),
            "documents": read[name].get("documents"),
            "document_share": _ratio(read[name].get("documents"), read_documents),
            "tokens": read[name].get("tokens"),
            "token_share": _ratio(read[name].get("tokens"), read_tokens),
        }
        for name in weights
    ]
    counts = facts.get("masking_counts") or {}
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
            **{key: facts[key] for key in SETTING_KEYS if key != "masking"},
            "steps": facts.get("steps"),
            "tokens_trained": facts.get("tokens_trained"),
            "from_scratch_config": facts.get("from_scratch_config"),
            "tokens_per_step": _ratio(facts.get("tokens_trained"), facts.get("steps")),
            "held_out_loss": run.held_out_loss,
        },
        "phases": facts.get("phases", []),
        "mixture": mixture,
        "masking": {
            **facts["masking"],
            "masked_fraction": _ratio(counts.get("masked"), counts.get("maskable")),
            "medical_share_maskable": _ratio(counts.get("medical_maskable"), counts.get("maskable")),
            "medical_share_masked": _ratio(counts.get("medical_masked"), counts.get("masked")),
        },
        "evaluation": _evaluation_context(run.mlm_eval, run.mlm_eval_file) if run.mlm_eval else None,
        "vocabulary": run.vocabulary,
        "finetune": [
            {**{key: r[key] for key in ("task", "split", "checkpoint", "metrics")},
             "num_examples": r.get("num_examples"), "seeds": len(r["seeds"]) if r.get("seeds") else None}
            for r in run.finetune
        ],
        "plot_file": plot_file,
        "files": {"mlm_eval": MLM_EVAL_FILE, "held_out_eval": HELD_OUT_EVAL_FILE, "vocabulary": VOCABULARY_REPORT_FILE,
                  "finetune": FINETUNE_RESULTS_FILE.format(task="*")},
    }


def _evaluation_context(report: dict, file: str) -> dict:
    metrics = report["metrics"]
    groups = [("All tokens", "")] + [
        (f"{group.capitalize()} tokens", f"{group}_")
        for group in ("medical", "other")
        if f"{group}_num_positions" in metrics
    ]
    protocols = [
        ("All labelled positions", "", report["masking"].get("counted_positions")),
        ("[MASK] positions only", MASK_ONLY, report["masking"].get("mask_only_positions") or MASK_ONLY_POSITIONS),
    ]
    return {
        "dataset": evaluation_name(report),
        "file": file,
        "run_own": file == HELD_OUT_EVAL_FILE,
        "documents": report["data"].get("documents"),
        "rows": report["data"].get("rows"),
        "tokens": report["data"].get("tokens"),
        "mlm_probability": report["masking"]["mlm_probability"],
        "seed": report["masking"].get("seed"),
        "top_k": report["top_k"],
        "protocols": [
            {
                "name": name,
                "counted_positions": counted,
                "perplexity": metrics.get(f"{protocol}perplexity"),
                "groups": [
                    {
                        "name": group_name,
                        "positions": metrics[f"{protocol}{prefix}num_positions"],
                        "top": {k: metrics.get(f"{protocol}{prefix}top_{k}") for k in report["top_k"]},
                    }
                    for group_name, prefix in groups
                ],
            }
            for name, protocol, counted in protocols
            if f"{protocol}num_positions" in metrics  # files written before the [MASK]-only figures lack them
        ],
    }


def _ratio(numerator, denominator) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def plot_training_curves(log_history: list[dict]) -> bytes | None:
    """PNG of the training and held-out loss and the masking rates over steps, from the Trainer's logs.

    A curve with no logged point is named in the legend as "not measured"; None when no loss was logged at all
    (a run shorter than its logging interval that was not evaluated).
    """
    train = [e for e in log_history if "loss" in e and "step" in e]
    held_out = [e for e in log_history if "eval_loss" in e and "step" in e]
    if not train and not held_out:
        return None
    fig = Figure(figsize=(7, 5.5), layout="constrained")
    loss_ax, rate_ax = fig.subplots(2, 1, sharex=True)
    _plot_curve(loss_ax, train, "loss", "training loss")
    _plot_curve(loss_ax, held_out, "eval_loss", "held-out loss", "o")
    loss_ax.set_ylabel("MLM loss")
    loss_ax.legend()
    _plot_curve(rate_ax, train, "mlm_probability", "scheduled masking rate")
    _plot_curve(rate_ax, train, "masked_fraction", "realised masking rate")
    _plot_curve(rate_ax, train, "medical_share_masked", "medical share of masked tokens")
    rate_ax.set_ylim(0, 1)
    rate_ax.set_xlabel("step")
    rate_ax.set_ylabel("fraction")
    rate_ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _plot_curve(ax, entries: list[dict], key: str, label: str, style: str = "-") -> None:
    points = [(e["step"], e[key]) for e in entries if key in e]
    if points:
        ax.plot(*zip(*points), style, label=label)
    else:
        ax.plot([], [], style, label=f"{label}: not measured")


# -- validation of the input files ----------------------------------------------------------------------------


def validate_run_facts(facts, path) -> None:
    """`run_facts.json` has every setting the card reports, with usable values; a measurement may be absent or null."""
    problems = _object_problems(facts)
    if not problems:
        missing = [key for key in SETTING_KEYS if key not in facts]
        if missing:
            problems.append(f"missing key(s) {missing} (was it written by recipes/pretrain.py?)")
        present = {key: value for key, value in facts.items() if key not in MEASURED_KEYS or value is not None}
        for key in ("steps", "global_batch_size", "max_seq_length", "tokens_trained"):
            _check(problems, present, key, _is_count, "a non-negative integer", required=False)
        for key in ("source_weights", "source_paths", "sources", "masking", "masking_counts"):
            _check(problems, present, key, lambda v: isinstance(v, dict), "an object", required=False)
        _check(problems, present, "log_history", lambda v: isinstance(v, list), "a list", required=False)
        _check(problems, facts, "phases", _is_phase_list, "a list of {name, steps, max_seq_length, global_batch_size, "
               "tokens_trained}", required=False)
        if isinstance(facts.get("masking"), dict):
            missing = [key for key in MASKING_KEYS if key not in facts["masking"]]
            if missing:
                problems.append(f"masking: missing key(s) {missing}")
        if isinstance(facts.get("source_weights"), dict):
            for name, weight in facts["source_weights"].items():
                if not (_is_number(weight) and weight > 0):
                    problems.append(f"source_weights.{name} must be a positive number, got {weight!r}")
    _raise_if(problems, path)


def validate_mlm_eval(data, path) -> None:
    """The result file of `recipes/evaluate_mlm.py`: data, masking, top_k and the metrics (overall, medical, other)."""
    problems = _object_problems(data)
    if not problems:
        for key in ("data", "masking", "metrics"):
            _check(problems, data, key, lambda v: isinstance(v, dict), "an object")
        _check(problems, data, "top_k", _is_k_list, "a non-empty increasing list of positive integers")
    if not problems:
        sources = data["data"].get("sources")
        entries = sources.values() if isinstance(sources, dict) else []
        if not entries or not all(isinstance(s, dict) and "path" in s for s in entries):
            problems.append(f"data.sources must name the evaluated sources with their path, got {sources!r}")
        _check(problems, data["data"], "split", lambda v: isinstance(v, str) and v, "a non-empty string")
        _check(problems, data["masking"], "mlm_probability", lambda v: _is_number(v) and 0 < v < 1,
               "a number in (0, 1)")
        metrics = data["metrics"]
        _check(problems, metrics, "num_positions", lambda v: _is_count(v) and v > 0, "a positive integer")
        _check(problems, metrics, "perplexity", lambda v: _is_number(v) and v >= 1, "a number >= 1")
        _top_k_problems(problems, metrics, "", data["top_k"])
        if f"{MASK_ONLY}num_positions" in metrics:
            _check(problems, metrics, f"{MASK_ONLY}num_positions", _is_count, "a non-negative integer")
            if metrics[f"{MASK_ONLY}num_positions"]:
                _top_k_problems(problems, metrics, MASK_ONLY, data["top_k"])
        for group in ("medical", "other", f"{MASK_ONLY}medical", f"{MASK_ONLY}other"):
            count = metrics.get(f"{group}_num_positions")
            if count is None:
                continue
            if not _is_count(count):
                problems.append(f"metrics.{group}_num_positions must be a non-negative integer, got {count!r}")
            elif count:
                _top_k_problems(problems, metrics, f"{group}_", data["top_k"])
    _raise_if(problems, path)


def validate_vocabulary_report(data, path) -> None:
    """The report of `recipes/extend_tokenizer.py`: tokens added, fertility (and single-token share) after/before."""
    problems = _object_problems(data)
    if not problems:
        _check(problems, data, "tokens_added", _is_count, "a non-negative integer")
        _check(problems, data, "fertility", lambda v: isinstance(v, dict) and v, "a non-empty object")
        _check(problems, data, "single_token_share", lambda v: isinstance(v, dict), "an object", required=False)
        for section in ("fertility", "single_token_share"):
            entries = data.get(section)
            for name, pair in entries.items() if isinstance(entries, dict) else ():
                if not (isinstance(pair, dict) and _is_number(pair.get("after"))
                        and ("before" not in pair or _is_number(pair["before"]))):
                    problems.append(f"{section}.{name} must hold a number 'after' (and 'before'), got {pair!r}")
        mining = data.get("mining", {})
        if not isinstance(mining, dict):
            problems.append(f"'mining' must be an object, got {mining!r}")
        else:
            _check(problems, mining, "min_document_frequency", lambda v: _is_count(v) and v >= 1,
                   "a positive integer", required=False)
            for key in ("sources_mined", "sources_excluded"):
                _check(problems, mining, key, lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
                       "a list of source names", required=False)
    _raise_if(problems, path)


def validate_finetune_result(data, path) -> None:
    """`finetune_results*.json`: task, split, checkpoint and metrics {name: {mean, std}}."""
    problems = _object_problems(data)
    if not problems:
        for key in ("task", "split", "checkpoint"):
            _check(problems, data, key, lambda v: isinstance(v, str) and v.strip(), "a non-empty string")
        metrics = data.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            problems.append(f"'metrics' must be a non-empty object of {{mean, std}}, got {metrics!r}")
        else:
            for name, value in metrics.items():
                if not (isinstance(value, dict) and all(_is_number(value.get(k)) for k in ("mean", "std"))):
                    problems.append(f"metrics.{name} must hold numbers 'mean' and 'std', got {value!r}")
    _raise_if(problems, path)


def _top_k_problems(problems: list[str], metrics: dict, prefix: str, top_k: list[int]) -> None:
    values = [metrics.get(f"{prefix}top_{k}") for k in top_k]
    for k, value in zip(top_k, values):
        if not (_is_number(value) and 0 <= value <= 1):
            problems.append(f"metrics.{prefix}top_{k} must be a number in [0, 1], got {value!r}")
    if all(_is_number(v) for v in values) and values != sorted(values):
        problems.append(f"metrics.{prefix}top_k accuracies must not decrease as k grows, got {values}")


def _is_phase_list(value) -> bool:
    counts = ("steps", "max_seq_length", "global_batch_size", "tokens_trained")
    return isinstance(value, list) and all(
        isinstance(p, dict) and isinstance(p.get("name"), str) and all(_is_count(p.get(k)) for k in counts)
        for p in value
    )


def _is_k_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_count(k) and k > 0 for k in value) and (
        value == sorted(set(value))
    )


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"Malformed {path}: not valid JSON ({err})") from err


def _object_problems(data) -> list[str]:
    return [] if isinstance(data, dict) else [f"expected a JSON object, got {type(data).__name__}"]


def _check(problems: list[str], data: dict, key: str, valid, expected: str, required: bool = True) -> None:
    if key in data and not valid(data[key]):
        problems.append(f"{key!r} must be {expected}, got {data[key]!r}")
    elif key not in data and required:
        problems.append(f"missing key {key!r}")


def _raise_if(problems: list[str], path) -> None:
    if problems:
        raise ValueError(f"Malformed {path}: " + "; ".join(problems))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub repo id (not a local path, not a `datasets` builder like `json`)."""
    if name in _PACKAGED_DATASETS_MODULES or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
