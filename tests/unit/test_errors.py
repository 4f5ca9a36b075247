"""The one error hierarchy and the one error body."""

from __future__ import annotations

import inspect

import pytest

from service import errors
from service.errors import (
    ActiveJobsExceeded,
    Diverged,
    ServiceError,
    ShapeMismatch,
    TrainingError,
    error_body,
)

CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass)
           if issubclass(c, ServiceError)]


def test_every_domain_error_is_a_service_error_with_a_status_and_a_type():
    assert len(CLASSES) > 20
    for cls in CLASSES:
        assert 400 <= cls.status_code < 600, cls
        assert cls.type and cls.type == cls.type.lower(), cls


def test_a_type_means_one_status():
    seen: dict[str, int] = {}
    for cls in CLASSES:
        assert seen.setdefault(cls.type, cls.status_code) == cls.status_code, cls


def test_the_body_names_the_field_only_when_there_is_one():
    assert error_body("invalid_input", "bad") == {"error": {"type": "invalid_input",
                                                            "message": "bad"}}
    e = ShapeMismatch("model expects 1 feature per row, got 2 in row 0", field="x")
    assert (e.status_code, e.to_dict()) == (422, {"error": {
        "type": "shape_mismatch", "field": "x",
        "message": "model expects 1 feature per row, got 2 in row 0"}})


def test_too_many_active_jobs_names_the_setting_and_says_when_to_retry():
    e = ActiveJobsExceeded(7, 7)
    assert e.status_code == 429 and e.active == 7
    assert "FITSERVE_MAX_ACTIVE_JOBS" in e.message and e.headers == {"Retry-After": "5"}


def test_a_job_stores_type_message_epoch_and_hint_and_nothing_else():
    e = Diverged("the loss is not finite at epoch 3", epoch=3, hint="lower the lr",
                 history=([1, 2], [0.5, 0.4], None), trace=[{"epoch": 1}])
    assert isinstance(e, TrainingError)
    assert e.job_error() == {"type": "diverged", "message": "the loss is not finite at epoch 3",
                             "epoch": 3, "hint": "lower the lr"}


@pytest.mark.parametrize("cls", [c for c in CLASSES if issubclass(c, TrainingError)])
def test_each_kind_of_training_failure_has_its_own_type(cls):
    assert cls("x").job_error()["type"] == cls.type
