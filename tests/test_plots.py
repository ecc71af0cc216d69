"""The plots: training curves and the long-context probe."""

import io

import matplotlib.image
from test_long_context import SECTION
from test_model_card import SHORT_RUN_LOG, sample_run_facts

from clinical_modernbert.plots import plot_long_context, plot_training_curves


def test_plot_is_drawn_from_the_log_history():
    log = sample_run_facts()["log_history"]
    image = matplotlib.image.imread(io.BytesIO(plot_training_curves(log)), format="png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    changed = [dict(entry, loss=entry["loss"] * 3) if "loss" in entry else entry for entry in log]
    assert plot_training_curves(changed) != plot_training_curves(log)


def test_plot_draws_what_was_logged_and_nothing_without_a_loss():
    log = sample_run_facts()["log_history"]
    without_rates = [{k: v for k, v in e.items() if k in ("loss", "eval_loss", "step")} for e in log]
    held_out_only = [e for e in log if "eval_loss" in e]
    for partial in (without_rates, held_out_only):  # curves not logged are named "not measured" in the legend
        assert plot_training_curves(partial).startswith(b"\x89PNG")
        assert plot_training_curves(partial) != plot_training_curves(log)
    assert plot_training_curves(SHORT_RUN_LOG) is None
    assert plot_training_curves([]) is None


# What the Trainer logs for a run shorter than its logging interval, not evaluated: the end-of-training summary only.


def test_long_context_plot_is_drawn_from_the_section():
    image = matplotlib.image.imread(io.BytesIO(plot_long_context(SECTION)), format="png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    changed = {**SECTION, "top_k": {**SECTION["top_k"], "1024": {"top_1": 0.9, "top_5": 0.95}}}
    assert plot_long_context(changed) != plot_long_context(SECTION)
