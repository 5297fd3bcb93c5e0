"""Figures from numbers: learning curves, confusion matrices, sample predictions.

matplotlib runs on its Agg backend: no display is needed (servers, CI, sweeps).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from digit_experiments.core.evaluate import normalise_rows  # noqa: E402


def learning_curves(history: dict[str, list[float]]) -> Figure:
    """Accuracy and loss per epoch, training against validation."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if history.get(key):
                ax.plot(epochs, history[key], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def confusion_matrices(cm: np.ndarray) -> Figure:
    """Counts and row-normalised fractions side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    panels = ((cm, "counts", "d"), (normalise_rows(cm), "row-normalised (recall)", ".2f"))
    for ax, (values, title, fmt) in zip(axes, panels):
        image = ax.imshow(values, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_title(f"confusion matrix, {title}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(cm.shape[1]))
        ax.set_yticks(range(cm.shape[0]))
        threshold = values.max() / 2 if values.max() > 0 else 1
        for (i, j), v in np.ndenumerate(values):
            colour = "white" if v > threshold else "black"
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    return fig


def sample_predictions(
    images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray
) -> Figure:
    """A grid of test images labelled true/predicted; misclassified ones in red.

    One image of tiles rather than a subplot per sample: the same picture, drawn about
    five times faster (it is made at the end of every run)."""
    n = len(images)
    cols = min(10, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    size, gap, label = images.shape[1], 2, 9  # pixels: tile, gap, caption band
    cell_h, cell_w = size + gap + label, size + gap
    mosaic = np.ones((rows * cell_h, cols * cell_w))
    fig = plt.figure(figsize=(1.6 * cols, 1.9 * rows + 0.4))
    ax = fig.add_axes((0, 0, 1, 1 - 0.4 / (1.9 * rows + 0.4)))
    for i, (img, t, p, c) in enumerate(zip(images, y_true, y_pred, confidence)):
        r, k = divmod(i, cols)
        top, left = r * cell_h + label, k * cell_w
        mosaic[top : top + size, left : left + size] = 1.0 - img.squeeze()
        ax.text(
            left + size / 2,
            top - 1,
            f"true {t} / pred {p}  {c:.0%}",
            ha="center",
            va="bottom",
            fontsize=7,
            color="black" if t == p else "red",
        )
    ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.axis("off")
    fig.suptitle("sample test predictions (red: misclassified)")
    return fig


def sweep_comparison(rows: list[dict]) -> Figure:
    """Test accuracy per job, and accuracy against training time."""
    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(13, 4.5))
    labels = [_short(f"{r['job']}: {r['overrides'] or r['run_id'][:8]}") for r in rows]
    accuracy = [r["test_accuracy"] for r in rows]
    positions = np.arange(len(rows))
    bars.barh(positions, accuracy, color="tab:blue")
    bars.set_yticks(positions, labels, fontsize=7)
    bars.invert_yaxis()
    low = min(accuracy)
    bars.set_xlim(max(0.0, low - (1 - low) * 0.5 - 0.005), 1.0)
    bars.set_xlabel("test accuracy")
    bars.set_title("test accuracy per job")
    for y, value in zip(positions, accuracy):
        bars.text(value, y, f" {value:.4f}", va="center", fontsize=7)
    seconds = [r["seconds"] or 0.0 for r in rows]
    scatter.scatter(seconds, accuracy)
    for x, y, r in zip(seconds, accuracy, rows):
        scatter.annotate(str(r["job"]), (x, y), textcoords="offset points", xytext=(4, 4))
    scatter.set_xlabel("training seconds")
    scatter.set_ylabel("test accuracy")
    scatter.set_title("accuracy against training time")
    scatter.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def repeats(labels: list[str], values: list[list[float]], metric: str = "test accuracy") -> Figure:
    """Each configuration's mean ± sample std (n - 1) as an error bar, and each of its
    runs (one per seed) as a dot beside it: how far apart the seeds are, next to how far
    apart the configurations are."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels) + 2), 4.5))
    positions = np.arange(len(labels))
    means = [float(np.mean(v)) for v in values]
    stds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
    ax.errorbar(
        positions,
        means,
        yerr=stds,
        fmt="o",
        color="tab:blue",
        capsize=6,
        markersize=8,
        label="mean ± std (n - 1)",
    )
    for x, runs in zip(positions, values):
        # Spread a little sideways so that equal values stay visible as separate runs.
        offsets = np.linspace(-0.12, 0.12, len(runs)) if len(runs) > 1 else [0.0]
        ax.scatter(x + 0.25 + np.asarray(offsets), runs, color="tab:orange", s=18, zorder=3)
    ax.scatter([], [], color="tab:orange", s=18, label="one run (seed)")
    for x, mean, std, runs in zip(positions, means, stds, values):
        spread = f"± {std:.4f}, n={len(runs)}" if len(runs) > 1 else "1 run"
        ax.annotate(
            f"{mean:.4f}\n{spread}",
            (x, mean),
            textcoords="offset points",
            xytext=(-10, 0),
            ha="right",
            va="center",
            fontsize=7,
        )
    ax.set_xticks(positions, [_short(label, 30) for label in labels], fontsize=8)
    ax.set_xlim(-0.7, len(labels) - 0.3)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per configuration, over seeds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def optimization_history(values: list[float]) -> Figure:
    """Each trial's objective (validation accuracy) and the best so far."""
    fig, ax = plt.subplots(figsize=(7, 4))
    trials = np.arange(len(values))
    ax.scatter(trials, values, label="trial")
    ax.plot(trials, np.maximum.accumulate(values), color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation accuracy")
    ax.set_title("optimisation history")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _short(label: str, limit: int = 60) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
