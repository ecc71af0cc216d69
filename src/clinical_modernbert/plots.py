"""The plots a person would rather look at than read, drawn from the figures the card shows: the training curves (from
the Trainer's logs) and the long-context probe (from the evaluation's results)."""

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


def plot_long_context(section: dict) -> bytes:
    """PNG of top-k accuracy against context length (log2 axis), one line per k."""
    lengths = section["context_lengths"]
    ks = list(section["top_k"][str(lengths[0])])
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for key in ks:
        ax.plot(lengths, [100 * section["top_k"][str(n)][key] for n in lengths], "o-",
                label=key.replace("top_", "top-"))
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_ylim(0, 100)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("accuracy of the masked tokens (%)")
    dropped = section["dropped_lengths"]
    dropped = f"\nnot measured (no document that long): {dropped}" if dropped else ""
    ax.set_title(f"{section['positions']} masked tokens in the last {section['probe_tokens']} tokens of "
                 f"{section['documents']} documents{dropped}", fontsize=10)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
