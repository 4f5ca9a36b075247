"""Resource limits, each answered with a clear error that names the setting."""

from __future__ import annotations

from service.config import Settings
from service.errors import InvalidInput, ServiceError


class LimitExceeded(InvalidInput):
    type = "limit_exceeded"


class TooManyJobs(ServiceError):
    status_code = 429
    type = "too_many_jobs"


def check_table(settings: Settings, rows: int, features: int, targets: int) -> None:
    if rows > settings.max_rows:
        raise LimitExceeded(f"{rows} rows exceed the limit of {settings.max_rows} "
                            "(FITSERVE_MAX_ROWS)", field="x")
    for what, count in (("feature", features), ("target", targets)):
        if count > settings.max_features:
            raise LimitExceeded(f"{count} {what} columns exceed the limit of "
                                f"{settings.max_features} (FITSERVE_MAX_FEATURES)",
                                field="x" if what == "feature" else "y")


def check_budget(settings: Settings, epochs: int, rows: int) -> None:
    if epochs * rows > settings.max_epoch_rows:
        raise LimitExceeded(
            f"epochs x rows = {epochs} x {rows} = {epochs * rows} exceeds the budget of "
            f"{settings.max_epoch_rows} (FITSERVE_MAX_EPOCH_ROWS): fewer epochs or rows",
            field="epochs",
        )


def check_active(settings: Settings, active: int) -> None:
    if active >= settings.max_active_jobs:
        raise TooManyJobs(
            f"this tenant has {active} queued or running jobs, the limit "
            f"(FITSERVE_MAX_ACTIVE_JOBS); retry when some have finished",
            headers={"Retry-After": "5"},
        )

