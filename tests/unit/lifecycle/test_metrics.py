"""Evaluation metrics, chunk by chunk, against scikit-learn's; rows that overflow refused."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidInput
from service.lifecycle.evaluate import Refusals, _class_labels, _predict
from service.lifecycle.metrics import ClassificationMetrics, RegressionMetrics, roc_auc
from service.serving.predictor import Prediction


def test_regression_over_chunks_matches_scikit_learn_for_several_targets(skm):
    rng = np.random.default_rng(0)
    actual = (rng.normal(size=(1000, 3)) * [1, 10, 100] + [0, 5, 1e4]).astype(np.float32)
    predicted = (actual + rng.normal(size=(1000, 3))).astype(np.float32)
    acc = RegressionMetrics(3)
    for s in range(0, 1000, 333):  # uneven chunks: the merge of means and M2 is exact
        acc.add(actual[s : s + 333], predicted[s : s + 333])
    got = acc.result(["a", "b", "c"])
    a, p = actual.astype(np.float64), predicted.astype(np.float64)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(a, p), rel=1e-12)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(a, p), rel=1e-12)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(a, p), rel=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(a, p), rel=1e-9)
    per = skm.r2_score(a, p, multioutput="raw_values")
    assert [t["r2"] for t in got["per_target"]] == pytest.approx(per, rel=1e-9)
    assert [t["name"] for t in got["per_target"]] == ["a", "b", "c"]


def test_r2_of_a_constant_target_is_null():
    acc = RegressionMetrics(1)
    acc.add(np.ones((4, 1), np.float32), np.zeros((4, 1), np.float32))
    assert acc.result(["y"])["r2"] is None


def test_roc_auc_with_ties_matches_scikit_learn(skm):
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=300).astype(np.float32) / 4  # many ties
    positive = rng.random(300) < 0.3 + 0.1 * scores
    assert roc_auc(scores, positive) == pytest.approx(skm.roc_auc_score(positive, scores),
                                                      abs=1e-12)
    assert roc_auc(scores, np.zeros(300, bool)) is None


def test_classification_over_chunks_matches_scikit_learn(skm):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(500, 4))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, 4, size=500)
    acc = ClassificationMetrics(4)
    for s in range(0, 500, 128):
        acc.add(labels[s : s + 128], probs[s : s + 128])
    got = acc.result()
    predicted = probs.argmax(1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert got["log_loss"] == pytest.approx(skm.log_loss(labels, probs, labels=range(4)),
                                            rel=1e-5)
    assert got["confusion_matrix"] == skm.confusion_matrix(labels, predicted).tolist()
    assert [c["precision"] for c in got["per_class"]] == pytest.approx(
        skm.precision_score(labels, predicted, average=None))
    assert [c["recall"] for c in got["per_class"]] == pytest.approx(
        skm.recall_score(labels, predicted, average=None))
    assert got["roc_auc"] is None  # binary only


def test_class_targets_that_are_no_class_are_refused_by_reason():
    refusals = Refusals()
    y = np.array([[0], [1], [2], [0.5], [-1], [1]], np.float32)
    ok, labels = _class_labels(y, 2, np.arange(6), refusals)
    assert ok.tolist() == [True, True, False, False, False, True]
    assert labels[ok].tolist() == [0, 1, 1]
    got = {r["reason"].split(" (")[0]: (r["rows"], r["first_rows"]) for r in refusals.public()}
    assert got == {"the target is not a class index": (2, [3, 4]),
                   "the target is a class the model does not have": (1, [2])}
    onehot = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    ok, labels = _class_labels(onehot, 2, np.arange(3), refusals)
    assert ok.tolist() == [True, False, True] and labels[ok].tolist() == [0, 1]


class _Overflowing:
    """Predicts 2x, refusing (as LoadedModel.infer does) a piece where any row overflows."""

    def infer(self, x: np.ndarray) -> Prediction:
        if (np.abs(x) > 1e30).any():
            raise InvalidInput("the prediction for x row 0 overflows float32", field="x")
        return Prediction(2 * x)


def test_only_the_rows_that_overflow_are_refused():
    x = np.arange(10, dtype=np.float32)[:, None]
    x[[3, 7]] = 3e38
    refusals = Refusals()
    pieces = list(_predict(_Overflowing(), x, np.arange(100, 110), refusals))  # type: ignore[arg-type]
    idx = np.concatenate([i for i, _ in pieces])
    y = np.concatenate([p.y for _, p in pieces])
    assert idx.tolist() == [0, 1, 2, 4, 5, 6, 8, 9]
    assert y[:, 0].tolist() == (2 * x[idx, 0]).tolist()
    assert refusals.public() == [{"reason": "the prediction overflows float32", "rows": 2,
                                  "first_rows": [103, 107]}]
