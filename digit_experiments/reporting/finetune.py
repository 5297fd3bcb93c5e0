"""Figures and tables of fine-tuning: a run's confusion matrix before and after, and
a few-shot sweep's accuracy against the number of labelled images per class.

Reads numbers and runs; writes nothing to a run (the app logs what it returns).
"""

from __future__ import annotations

import csv
import io

import numpy as np
from matplotlib.figure import Figure

from digit_experiments.reporting import plots  # noqa: F401  (matplotlib's Agg backend)

# A few-shot sweep varies this param (data.per_class=5,20,100,null).
PER_CLASS = "data.per_class"
FEW_SHOT_COLUMNS = (
    "job",
    "per_class",
    "images_per_class",
    "baseline_test_accuracy",
    "test_accuracy",
    "baseline_mnist_test_accuracy",
    "mnist_test_accuracy",
    "run_id",
)


def before_after(cm_before: np.ndarray, cm_after: np.ndarray, title: str = "") -> Figure:
    """Row-normalised confusion matrices of the source model and the fine-tuned one on
    the same test images, side by side (recall on the diagonal)."""
    import matplotlib.pyplot as plt

    from digit_experiments.core.evaluate import normalise_rows

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, cm, name in ((axes[0], cm_before, "before"), (axes[1], cm_after, "after")):
        values = normalise_rows(cm)
        accuracy = np.trace(cm) / max(cm.sum(), 1)
        image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_title(f"{name} fine-tuning: accuracy {accuracy:.2%}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(cm.shape[1]))
        ax.set_yticks(range(cm.shape[0]))
        for (i, j), v in np.ndenumerate(values):
            if cm[i, j]:
                colour = "white" if v > 0.5 else "black"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=colour)
    fig.suptitle(title or "confusion matrix on the test split, row-normalised (recall)")
    fig.tight_layout()
    return fig


def few_shot_rows(runs) -> list[dict]:
    """One row per finished run of a sweep that set data.per_class, fewest images first
    (`all`, data.per_class=null, last). `images_per_class`: labelled images per class
    the run had (training and validation), from its data.n_train and data.n_val."""
    rows = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        if run.info.status != "FINISHED" or PER_CLASS not in params:
            continue
        if "test_accuracy" not in metrics:
            continue
        setting = params[PER_CLASS]
        labelled = int(params.get("data.n_train", 0)) + int(params.get("data.n_val", 0))
        job = run.data.tags.get("hydra_job_num")
        rows.append(
            {
                "job": int(job) if job is not None else None,
                "per_class": "all" if setting in ("None", "", "null") else setting,
                "images_per_class": round(labelled / 10, 1),
                **{key: metrics.get(key) for key in FEW_SHOT_COLUMNS[3:7]},
                "run_id": run.info.run_id,
            }
        )
    return sorted(rows, key=lambda r: (r["per_class"] == "all", r["images_per_class"]))


def is_few_shot(rows: list[dict]) -> bool:
    """A sweep over data.per_class: at least two runs with different settings."""
    return len({r["per_class"] for r in rows}) >= 2


def few_shot_figure(rows: list[dict]) -> Figure:
    """Test accuracy against labelled images per class (log scale): after fine-tuning,
    the source model before it, and MNIST after (how much was forgotten)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x = [r["images_per_class"] for r in rows]
    series = (
        ("test_accuracy", "after fine-tuning (test split)", "o-", "tab:blue"),
        ("baseline_test_accuracy", "before: the source model (test split)", "s--", "tab:gray"),
        ("mnist_test_accuracy", "MNIST test set, after", "^:", "tab:red"),
    )
    for key, label, style, colour in series:
        points = [(xi, r[key]) for xi, r in zip(x, rows) if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, color=colour, label=label)
    for xi, r in zip(x, rows):
        if r.get("test_accuracy") is not None:
            ax.annotate(
                f"{r['test_accuracy']:.1%}",
                (xi, r["test_accuracy"]),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=8,
            )
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{r['per_class']}\n({r['images_per_class']:g})" for r in rows])
    ax.minorticks_off()
    ax.set_xlabel("labelled images per class (data.per_class; in brackets: what the run had)")
    ax.set_ylabel("accuracy")
    ax.set_title("few-shot fine-tuning: accuracy per labelled images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def few_shot_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FEW_SHOT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def few_shot_markdown(rows: list[dict]) -> str:
    def cell(value):
        if value is None:
            return ""
        return f"{value:.4f}" if isinstance(value, float) and value <= 1 else str(value)

    lines = ["| " + " | ".join(FEW_SHOT_COLUMNS) + " |", "|" + "---|" * len(FEW_SHOT_COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in FEW_SHOT_COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"
