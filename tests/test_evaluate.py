"""Metrics and sample picking: pure functions on arrays."""

from __future__ import annotations

import numpy as np
import pytest

from digit_experiments.core import evaluate


def test_metrics_of_a_known_prediction():
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 9])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 8])
    m = evaluate.classification_metrics(y_true, y_pred)
    assert m["test_accuracy"] == pytest.approx(12 / 14)
    assert m["test_f1_class_2"] == 1.0
    assert m["test_f1_class_0"] == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert m["test_f1_class_8"] == pytest.approx(2 / 3)  # precision 1/2, recall 1
    per_class = [m[f"test_f1_class_{c}"] for c in range(10)]
    assert m["test_f1_macro"] == pytest.approx(np.mean(per_class))


def test_confusion_matrix_rows_are_true_labels_and_it_sums_to_n():
    y_true = np.array([3, 3, 5])
    y_pred = np.array([3, 5, 5])
    cm = evaluate.confusion(y_true, y_pred)
    assert cm.shape == (10, 10) and cm.sum() == 3
    assert cm[3, 3] == 1 and cm[3, 5] == 1 and cm[5, 5] == 1
    normalised = evaluate.normalise_rows(cm)
    assert normalised[3, 5] == 0.5 and normalised[0].sum() == 0.0
    csv = evaluate.confusion_csv(cm).splitlines()
    assert csv[0].startswith("true\\pred,0,1") and csv[4] == "3,0,0,0,1,0,1,0,0,0,0"


def test_report_text_and_dict_agree():
    y = np.arange(10).repeat(3)
    text, as_dict = evaluate.report(y, y)
    assert as_dict["accuracy"] == 1.0 and "macro avg" in text


def test_samples_include_misclassified_ones_up_to_half():
    y_true = np.zeros(100, dtype=int)
    y_pred = y_true.copy()
    y_pred[[5, 17, 42]] = 1
    idx = evaluate.pick_samples(y_true, y_pred, 10, seed=0)
    assert len(idx) == 10 and len(set(idx)) == 10
    assert set(idx) >= {5, 17, 42}
    many_wrong = evaluate.pick_samples(y_true, np.ones(100, dtype=int), 10, seed=0)
    assert len(many_wrong) == 10  # all wrong: the grid is still full
