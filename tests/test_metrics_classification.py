"""Accuracy, confusion matrix, explanation size and last-layer sparsity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from p2p_cli.errors import P2PError
from p2p_cli.metrics.classification import (
    accuracy,
    confusion_matrix,
    explanation_size,
    explanation_sizes,
    last_layer_sparsity,
    per_class_accuracy,
    predictions,
)

LABELS = np.array([0, 0, 1, 1, 2, 2])
PREDS = np.array([0, 1, 1, 1, 0, 2])


def test_accuracy_from_predictions_and_logits():
    assert accuracy(PREDS, LABELS) == pytest.approx(4 / 6)
    logits = np.eye(3)[PREDS] * 5.0 - 1.0  # argmax = PREDS
    assert accuracy(logits, LABELS) == pytest.approx(4 / 6)
    assert accuracy(LABELS, LABELS) == 1.0


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(PREDS, LABELS)
    expected = np.array(
        [
            [1, 1, 0],  # class 0: one right, one predicted as 1
            [0, 2, 0],
            [1, 0, 1],  # class 2: one predicted as 0
        ]
    )
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == len(LABELS)
    assert confusion_matrix(PREDS, LABELS, num_classes=5).shape == (5, 5)


def test_per_class_accuracy_nan_for_empty_class():
    pca = per_class_accuracy(PREDS, LABELS, num_classes=4)
    np.testing.assert_allclose(pca[:3], [0.5, 1.0, 0.5])
    assert math.isnan(pca[3])


def test_predictions_tie_goes_to_lowest_index():
    np.testing.assert_array_equal(predictions(np.array([[1.0, 1.0], [0.0, 2.0]])), [0, 1])


def test_classification_errors():
    with pytest.raises(P2PError, match="labels"):
        accuracy(PREDS, LABELS[:-1])
    with pytest.raises(P2PError, match="N = 0"):
        accuracy(np.array([], dtype=int), np.array([], dtype=int))
    with pytest.raises(P2PError, match="num_classes"):
        confusion_matrix(PREDS, LABELS, num_classes=2)
    with pytest.raises(P2PError):
        accuracy(np.zeros((2, 2, 2)), np.zeros(2, dtype=int))


def test_explanation_size_hand_worked():
    # Image 0, predicted class 0: contributions sim * W[0] = [4, 3, 2, 1, -5] -> positive total
    #   10, 90 % = 9: 4 + 3 + 2 = 9 reaches it -> 3 prototypes.
    # Image 1, predicted class 1: W[1] = [0, 0, 0, 0, 1] -> contributions [0, 0, 0, 0, 2]
    #   -> 1 prototype.
    # Image 2, predicted class 1 with zero similarity to prototype 4 -> no positive evidence -> 0.
    sim = np.array(
        [
            [4.0, 3.0, 2.0, 1.0, 5.0],
            [1.0, 1.0, 1.0, 1.0, 2.0],
            [1.0, 1.0, 1.0, 1.0, 0.0],
        ]
    )
    w = np.array([[1.0, 1.0, 1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    preds = np.array([0, 1, 1])
    np.testing.assert_array_equal(explanation_sizes(sim, w, preds), [3, 1, 0])
    assert explanation_size(sim, w, preds) == pytest.approx(4 / 3)
    # fraction 1.0 needs all four positive ones for image 0
    np.testing.assert_array_equal(explanation_sizes(sim, w, preds, fraction=1.0), [4, 1, 0])
    # fraction 0.4 -> 4 alone reaches 4 = 0.4 * 10
    np.testing.assert_array_equal(explanation_sizes(sim, w, preds, fraction=0.4), [1, 1, 0])


def test_explanation_size_equal_contributions_no_float_off_by_one():
    # Ten contributions of 0.1: 90 % is reached after exactly nine despite rounding.
    sim = np.full((1, 10), 0.1)
    w = np.ones((1, 10))
    assert explanation_sizes(sim, w, np.array([0]))[0] == 9


def test_explanation_size_uses_logits_argmax_and_validates():
    sim = np.array([[1.0, 2.0]])
    w = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert explanation_sizes(sim, w, np.array([[0.0, 3.0]]))[0] == 1
    with pytest.raises(P2PError, match="fraction"):
        explanation_size(sim, w, np.array([0]), fraction=0.0)
    with pytest.raises(P2PError, match="prototypes"):
        explanation_size(sim, np.ones((2, 3)), np.array([0]))
    with pytest.raises(P2PError, match="predicted classes"):
        explanation_size(sim, w, np.array([2]))


def test_last_layer_sparsity():
    # 2 classes, 4 prototypes (2 per class). Off-class entries: W[1,0], W[1,1], W[0,2], W[0,3].
    ident = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    w = np.array(
        [
            [1.0, 0.9, 0.0005, -0.5],  # W[0,2] ~ 0 (sparse), W[0,3] = -0.5 (not)
            [-0.001, 0.2, 1.0, 1.2],  # W[1,0] = -1e-3 (sparse, border), W[1,1] = 0.2 (not)
        ]
    )
    assert last_layer_sparsity(w, ident) == 0.5
    assert last_layer_sparsity(w, ident, atol=1.0) == 1.0
    assert last_layer_sparsity(w, ident, atol=0.0) == 0.0
    # the ProtoPNet initialisation (-0.5 off-class) is not sparse at all
    init = np.where(ident.T == 1, 1.0, -0.5)
    assert last_layer_sparsity(init, ident) == 0.0
    # a prototype shared by both classes (ProtoPShare) has no off-class entry
    shared = np.array([[1, 1], [1, 0], [0, 1], [0, 1]])
    # off-class: W[1,1] = 0.2, W[0,2] ~ 0, W[0,3] = -0.5 -> 1 of 3
    assert last_layer_sparsity(w, shared) == pytest.approx(1 / 3)
    assert last_layer_sparsity(np.ones((1, 3)), np.ones((3, 1))) == 1.0  # K = 1: vacuous
    with pytest.raises(P2PError, match="class_identity"):
        last_layer_sparsity(w, ident.T)
