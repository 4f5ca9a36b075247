"""Evaluation metrics in numpy, accumulated chunk by chunk so that a dataset of any size is
scored with memory bounded by the chunk (ROC AUC keeps one float32 score per row).

Definitions are scikit-learn's (the tests hold each to it): over several targets, a
regression metric is the mean of the per-target values ("uniform_average"); the confusion
matrix has the actual class in rows and the predicted one in columns; log loss clips the
probabilities to [eps, 1 - eps] (eps of float32) and renormalizes each row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

_EPS32 = float(np.finfo(np.float32).eps)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass
class RegressionMetrics:
    """MSE, RMSE, MAE and R² per target, from sums over the rows seen."""

    targets: int
    n: int = 0
    sse: np.ndarray = field(init=False)
    sae: np.ndarray = field(init=False)
    mean: np.ndarray = field(init=False)  # of y, for R²'s total sum of squares
    m2: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sse, self.sae, self.mean, self.m2 = (np.zeros(self.targets) for _ in range(4))

    def add(self, actual: np.ndarray, predicted: np.ndarray) -> None:
        """One chunk: (rows, targets) each."""
        if not len(actual):
            return
        a, p = actual.astype(np.float64), predicted.astype(np.float64)
        err = p - a
        self.sse += np.einsum("ij,ij->j", err, err)
        self.sae += np.abs(err).sum(axis=0)
        # Chan et al.'s merge of (count, mean, M2): no sum of squares cancels
        n_b = len(a)
        mean_b = a.mean(axis=0)
        m2_b = ((a - mean_b) ** 2).sum(axis=0)
        total = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / total)
        self.n = total

    def result(self, names: list[str]) -> dict[str, Any]:
        n = max(self.n, 1)
        mse, mae = self.sse / n, self.sae / n
        rmse = np.sqrt(mse)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(self.m2 > 0, 1.0 - self.sse / self.m2, np.nan)
        per_target = [
            {"name": name, "mse": float(mse[j]), "rmse": float(rmse[j]), "mae": float(mae[j]),
             "r2": _finite(r2[j])}
            for j, name in enumerate(names)
        ]
        return {
            "mse": float(mse.mean()), "rmse": float(rmse.mean()), "mae": float(mae.mean()),
            # undefined for a constant target (as fit.r2_score says it)
            "r2": None if np.isnan(r2).any() else float(r2.mean()),
            "per_target": per_target,
        }


@dataclass
class ClassificationMetrics:
    """Accuracy, log loss, the confusion matrix, per-class precision and recall, and (two
    classes) ROC AUC."""

    classes: int
    confusion: np.ndarray = field(init=False)
    nll: float = 0.0
    scores: list[np.ndarray] = field(default_factory=list)  # P(class 1), two classes only
    positives: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.classes, self.classes), np.int64)

    def add(self, labels: np.ndarray, probabilities: np.ndarray) -> None:
        """One chunk: the true class of each row (int) and the predicted probabilities."""
        if not len(labels):
            return
        c = self.classes
        predicted = probabilities.argmax(axis=1)
        self.confusion += np.bincount(labels * c + predicted, minlength=c * c).reshape(c, c)
        p = np.clip(probabilities.astype(np.float64), _EPS32, 1 - _EPS32)
        p /= p.sum(axis=1, keepdims=True)
        self.nll += float(-np.log(p[np.arange(len(labels)), labels]).sum())
        if c == 2:
            self.scores.append(probabilities[:, 1].astype(np.float32))
            self.positives.append(labels == 1)

    def result(self) -> dict[str, Any]:
        cm = self.confusion
        n = int(cm.sum())
        hits = np.diag(cm)
        predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
        per_class = [
            {"class": k, "precision": float(hits[k] / predicted[k]) if predicted[k] else None,
             "recall": float(hits[k] / actual[k]) if actual[k] else None,
             "support": int(actual[k])}
            for k in range(self.classes)
        ]
        auc = None
        if self.classes == 2 and self.scores:
            auc = roc_auc(np.concatenate(self.scores), np.concatenate(self.positives))
        return {
            "accuracy": float(hits.sum() / n) if n else None,
            "log_loss": self.nll / n if n else None,
            "confusion_matrix": cm.tolist(),
            "per_class": per_class,
            "roc_auc": auc,
        }


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """The area under the ROC curve: the chance that a positive row scores above a negative
    one, ties counting a half (Mann-Whitney U over average ranks; the trapezoids of
    scikit-learn's curve give the same). None when either class is absent."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0  # 1-based ranks, averaged over each tie
    ranks = mean_rank[group]
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)
