"""Classification and explanation-compactness metrics.

* :func:`accuracy`, :func:`per_class_accuracy`, :func:`confusion_matrix` — top-1, as fractions
  in ``[0, 1]``.
* :func:`explanation_size` — how many prototypes an explanation needs: the prototypes that
  matter per image (a measure beyond the Proto2Proto paper).
* :func:`last_layer_sparsity` — how close the last layer is to ProtoPNet's ideal of zero
  off-class connections (the L1 term of ProtoPNet's last-layer optimisation, Chen et al.,
  NeurIPS 2019, drives those weights to 0).

All inputs are numpy arrays (or anything ``np.asarray`` accepts, e.g. CPU tensors).
"""

from __future__ import annotations

import numpy as np

from p2p_cli.errors import P2PError

__all__ = [
    "accuracy",
    "confusion_matrix",
    "explanation_size",
    "explanation_sizes",
    "last_layer_sparsity",
    "per_class_accuracy",
    "predictions",
]

# Relative slack when comparing a cumulative sum with ``fraction · total``, so that e.g. ten
# equal contributions reach 90 % after exactly nine of them despite float rounding.
_REL_TOL = 1e-9


def predictions(logits_or_preds: object) -> np.ndarray:
    """Top-1 predictions: ``(N, K)`` logits/scores → argmax over K; ``(N,)`` ints pass through.

    Ties in the logits go to the lowest class index (``np.argmax``).
    """
    arr = np.asarray(logits_or_preds)
    if arr.ndim == 2:
        if arr.shape[1] < 1:
            raise P2PError("logits have no classes (shape (N, 0))")
        return np.argmax(arr, axis=1).astype(np.int64)
    if arr.ndim == 1:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise P2PError("1-D predictions must be integer class indices")
        return arr.astype(np.int64)
    raise P2PError(f"expected (N, K) logits or (N,) predictions, got shape {arr.shape}")


def _preds_labels(logits_or_preds: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    preds = predictions(logits_or_preds)
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise P2PError(f"labels must have shape (N,), got {lab.shape}")
    lab = lab.astype(np.int64)
    if preds.shape[0] != lab.shape[0]:
        raise P2PError(f"{preds.shape[0]} predictions but {lab.shape[0]} labels")
    if lab.shape[0] == 0:
        raise P2PError("no samples to evaluate (N = 0)")
    if (lab < 0).any() or (preds < 0).any():
        raise P2PError("class indices must be >= 0")
    return preds, lab


def _num_classes(preds: np.ndarray, lab: np.ndarray, num_classes: int | None) -> int:
    seen = int(max(preds.max(), lab.max())) + 1
    if num_classes is None:
        return seen
    if num_classes < seen:
        raise P2PError(f"num_classes = {num_classes} but class index {seen - 1} occurs")
    return int(num_classes)


def accuracy(logits_or_preds: object, labels: object) -> float:
    """Top-1 accuracy as a fraction in ``[0, 1]``.

    Args:
        logits_or_preds: ``(N, K)`` logits (argmax taken) or ``(N,)`` predicted classes.
        labels: ``(N,)`` true classes.
    """
    preds, lab = _preds_labels(logits_or_preds, labels)
    return float(np.mean(preds == lab))


def confusion_matrix(logits_or_preds: object, labels: object, num_classes: int | None = None) -> np.ndarray:
    """``(K, K)`` int64 confusion matrix; ``C[t, p]`` = #samples of true class t predicted as p.

    Rows are true classes, columns predictions. ``K`` is ``num_classes`` or, if None, one more
    than the largest class index seen.
    """
    preds, lab = _preds_labels(logits_or_preds, labels)
    k = _num_classes(preds, lab, num_classes)
    return np.bincount(lab * k + preds, minlength=k * k).reshape(k, k).astype(np.int64)


def per_class_accuracy(logits_or_preds: object, labels: object, num_classes: int | None = None) -> np.ndarray:
    """``(K,)`` float64 accuracy per true class (the confusion matrix's diagonal over row sums).

    A class with no samples gets NaN (undefined, not 0); callers serialising to JSON should
    map NaN to null.
    """
    cm = confusion_matrix(logits_or_preds, labels, num_classes)
    support = cm.sum(axis=1)
    out = np.full(cm.shape[0], np.nan)
    has = support > 0
    out[has] = np.diag(cm)[has] / support[has]
    return out


def explanation_sizes(
    similarities: object, last_layer_weight: object, preds: object, fraction: float = 0.9
) -> np.ndarray:
    """Per-image explanation size: prototypes needed for ``fraction`` of the positive evidence.

    For image n with predicted class ``c = preds[n]``, prototype j contributes
    ``e_j = similarities[n, j] · W[c, j]`` to the class-c logit. Only positive contributions
    are evidence *for* the prediction. Sorting them in decreasing order, the size is the
    smallest k such that the top k sum to at least ``fraction`` of the total positive
    evidence (with a relative slack of 1e-9 against float rounding). An image with no
    positive evidence has size 0.

    Args:
        similarities: ``(N, m)`` prototype similarities (the last layer's inputs).
        last_layer_weight: ``(K, m)`` last-layer weights ``h`` (no bias).
        preds: ``(N,)`` predicted classes, or ``(N, K)`` logits (argmax taken).
        fraction: in ``(0, 1]``.

    Returns:
        ``(N,)`` int64 sizes, each in ``[0, m]``.
    """
    sim = np.asarray(similarities, dtype=np.float64)
    w = np.asarray(last_layer_weight, dtype=np.float64)
    if sim.ndim != 2 or w.ndim != 2:
        raise P2PError(f"similarities must be (N, m) and weights (K, m); got {sim.shape} and {w.shape}")
    if sim.shape[1] != w.shape[1]:
        raise P2PError(f"similarities have {sim.shape[1]} prototypes but the last layer has {w.shape[1]}")
    if not 0.0 < float(fraction) <= 1.0:
        raise P2PError(f"fraction must be in (0, 1], got {fraction}")
    pred = predictions(preds)
    if pred.shape[0] != sim.shape[0]:
        raise P2PError(f"{pred.shape[0]} predictions but {sim.shape[0]} similarity rows")
    if pred.size and (pred.min() < 0 or pred.max() >= w.shape[0]):
        raise P2PError(f"predicted classes must lie in [0, {w.shape[0] - 1}]")
    contrib = sim * w[pred]  # (N, m)
    pos = np.where(contrib > 0, contrib, 0.0)
    ordered = -np.sort(-pos, axis=1)  # descending
    cum = np.cumsum(ordered, axis=1)
    total = cum[:, -1:] if cum.shape[1] else np.zeros((sim.shape[0], 1))
    target = float(fraction) * total * (1.0 - _REL_TOL)
    sizes = (cum < target).sum(axis=1) + 1
    sizes = np.minimum(sizes, (pos > 0).sum(axis=1))  # never more than the positive ones
    sizes[total[:, 0] <= 0] = 0
    return sizes.astype(np.int64)


def explanation_size(similarities: object, last_layer_weight: object, preds: object, fraction: float = 0.9) -> float:
    """Mean over images of :func:`explanation_sizes` (a float in ``[0, m]``)."""
    sizes = explanation_sizes(similarities, last_layer_weight, preds, fraction)
    if sizes.size == 0:
        raise P2PError("no images to evaluate (N = 0)")
    return float(sizes.mean())


def last_layer_sparsity(weight: object, class_identity: object, atol: float = 1e-3) -> float:
    """Fraction of *off-class* last-layer weights that are (near) zero.

    Off-class entries are ``W[k, j]`` with ``class_identity[j, k] == 0`` — the connections the
    L1 term of ProtoPNet's last-layer optimisation (Chen et al., NeurIPS 2019) pushes to 0.
    The result is ``#{off-class |W[k, j]| <= atol} / #{off-class}``, in ``[0, 1]`` (1 =
    perfectly class-sparse). After ProtoPShare (Rymarczyk et al., KDD 2021) a prototype may
    serve several classes; all of them count as own-class. If there is no off-class
    entry at all (e.g. K = 1), the layer is vacuously sparse: 1.0.

    Args:
        weight: ``(K, m)`` last-layer weights.
        class_identity: ``(m, K)`` 0/1 prototype-class identity.
        atol: absolute tolerance (>= 0).
    """
    w = np.asarray(weight, dtype=np.float64)
    ident = np.asarray(class_identity)
    if w.ndim != 2 or ident.shape != (w.shape[1], w.shape[0]):
        raise P2PError(f"weight must be (K, m) and class_identity (m, K); got {w.shape} and {ident.shape}")
    if atol < 0:
        raise P2PError(f"atol must be >= 0, got {atol}")
    off = ident.T == 0
    n_off = int(off.sum())
    if n_off == 0:
        return 1.0
    return float(np.count_nonzero(np.abs(w[off]) <= atol) / n_off)
