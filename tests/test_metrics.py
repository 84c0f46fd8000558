import math

import numpy as np
import pytest

from mnist_gluon.metrics import (
    classification_report,
    confusion_matrix,
    format_report,
    scores_from_confusion,
    softmax_cross_entropy,
)


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 0, 2])
    np.testing.assert_array_equal(
        confusion_matrix(labels, predictions, 3), [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_per_class_scores_match_a_hand_computed_case():
    #            predicted 0  1  2
    confusion = np.array([[1, 1, 0],   # class 0: recall 1/2
                          [0, 1, 0],   # class 1: recall 1/1
                          [1, 0, 2]])  # class 2: recall 2/3
    scores = scores_from_confusion(confusion)
    assert [s.precision for s in scores] == pytest.approx([1 / 2, 1 / 2, 1.0])
    assert [s.recall for s in scores] == pytest.approx([1 / 2, 1.0, 2 / 3])
    assert scores[2].f1 == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3))
    assert [s.support for s in scores] == [2, 1, 3]


def test_a_class_that_never_occurs_nor_is_predicted_scores_zero_not_nan():
    labels = np.array([0, 1, 1])
    logits = np.eye(3)[[0, 1, 0]] * 5.0
    report = classification_report(logits, labels)
    absent = report.per_class[2]
    assert (absent.precision, absent.recall, absent.f1, absent.support) == (0.0, 0.0, 0.0, 0)
    assert report.per_class[0].precision == pytest.approx(0.5)
    assert not any(math.isnan(v) for v in (report.macro_precision, report.macro_recall,
                                           report.macro_f1))


def test_accuracy_is_the_fraction_of_correct_top1_predictions():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [1.0, 0.0]])
    report = classification_report(logits, np.array([0, 1, 1, 1]))
    assert report.accuracy == 0.5
    assert report.confusion.sum() == 4


def test_cross_entropy_matches_the_definition_and_is_stable_for_large_logits():
    logits = np.array([[1.0, 2.0, 3.0]])
    expected = -math.log(math.exp(1.0) / (math.exp(1) + math.exp(2) + math.exp(3)))
    assert softmax_cross_entropy(logits, np.array([0])) == pytest.approx(expected)
    assert softmax_cross_entropy(logits + 1000, np.array([0])) == pytest.approx(expected)


def test_report_dict_has_the_keys_scripts_rely_on():
    report = classification_report(np.eye(10), np.arange(10)).to_dict()
    assert {"accuracy", "loss", "per_class", "confusion_matrix"} <= set(report)
    assert report["accuracy"] == 1.0 and len(report["per_class"]) == 10


def test_formatted_report_shows_accuracy_per_class_rows_and_the_matrix():
    text = format_report(classification_report(np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 2, 1])))
    assert "accuracy 0.7500" in text
    assert "macro" in text and "confusion matrix" in text
    assert len(text.splitlines()) == 2 + 1 + 3 + 1 + 2 + 1 + 3
