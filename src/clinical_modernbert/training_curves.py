"""The model card's plot: training and held-out loss and the masking rates over the steps, from the Trainer's logs."""

from __future__ import annotations

import io

from matplotlib.figure import Figure


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
