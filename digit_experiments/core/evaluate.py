"""Metrics from labels and predicted probabilities: arrays in, numbers out (no TensorFlow)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from digit_experiments.core.data import DIGITS


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = DIGITS
) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1 and the F1 of every class, as test_* metrics."""
    classes = list(range(num_classes))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average="macro", zero_division=0
    )
    per_class = skm.f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    result = {
        "test_accuracy": float(np.mean(y_true == y_pred)),
        "test_f1_macro": float(f1),
        "test_precision_macro": float(precision),
        "test_recall_macro": float(recall),
    }
    result.update({f"test_f1_class_{c}": float(v) for c, v in zip(classes, per_class)})
    return result


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = DIGITS) -> np.ndarray:
    """Counts (10x10 for digits): row = true class, column = predicted class."""
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def normalise_rows(cm: np.ndarray) -> np.ndarray:
    """Each row as fractions of its true class (recall on the diagonal); empty rows stay 0."""
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)


def confusion_csv(cm: np.ndarray) -> str:
    classes = range(len(cm))
    header = "true\\pred," + ",".join(map(str, classes))
    rows = [f"{c}," + ",".join(str(int(v)) for v in cm[c]) for c in classes]
    return "\n".join([header, *rows]) + "\n"


def report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = DIGITS) -> tuple[str, dict]:
    """sklearn's classification report as text and as a dict (for JSON)."""
    classes = list(range(num_classes))
    names = [str(c) for c in classes]
    kwargs = {"labels": classes, "target_names": names, "digits": 4, "zero_division": 0}
    text = skm.classification_report(y_true, y_pred, **kwargs)
    as_dict = skm.classification_report(y_true, y_pred, output_dict=True, **kwargs)
    return text, as_dict


def pick_samples(y_true: np.ndarray, y_pred: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n test images to show: up to half misclassified, the rest correct."""
    rng = np.random.default_rng(seed)
    wrong = rng.permutation(np.flatnonzero(y_true != y_pred))
    right = rng.permutation(np.flatnonzero(y_true == y_pred))
    n = min(n, len(y_true))
    # Half the grid for mistakes if there are that many; more if too few are right.
    n_wrong = max(min(len(wrong), n // 2), n - len(right))
    return np.concatenate([wrong[:n_wrong], right[: n - n_wrong]]).astype(int)
