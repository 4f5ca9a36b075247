"""The one error hierarchy. Every domain error is a ``ServiceError`` carrying its HTTP
status and a stable ``type``; ``error_body`` is the one place the JSON error shape
``{"error": {"type": ..., "message": ..., "field"?: ...}}`` is built (the FastAPI handlers,
the Origin/Host guard and the predict lane all call it). Nothing here imports FastAPI."""

from __future__ import annotations

from typing import Any, ClassVar


def error_body(type_: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON error shape every route answers with."""
    body: dict[str, Any] = {"type": type_, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return {"error": body}


class ServiceError(Exception):
    """The root: a failure a client can be told about, with its status and type."""

    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return error_body(self.type, self.message, self.field, **self.extra)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status_code})"


# ---------------------------------------------------------------- 4xx: the request


class BadRequest(ServiceError):
    status_code = 400
    type = "bad_request"


class MalformedBody(BadRequest):
    type = "malformed_body"


class InferenceError(BadRequest):
    """A request the Open Inference Protocol rejects (the protocol answers 400)."""

    type = "invalid_inference_request"


class Unauthorized(ServiceError):
    status_code = 401
    type = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    type = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    type = "not_found"


class Conflict(ServiceError):
    status_code = 409
    type = "conflict"


class PayloadTooLarge(ServiceError):
    status_code = 413
    type = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    type = "unsupported_media_type"


class InvalidInput(ServiceError):
    status_code = 422
    type = "invalid_input"


class ShapeMismatch(InvalidInput):
    type = "shape_mismatch"


class DeviceUnavailable(InvalidInput):
    type = "device_unavailable"


class LimitExceeded(InvalidInput):
    """A request past a configured limit; the message names the setting."""

    type = "limit_exceeded"


class TooManyJobs(ServiceError):
    status_code = 429
    type = "too_many_jobs"


class ActiveJobsExceeded(TooManyJobs):
    """Raised by the store when a job insert would pass a tenant's active-job limit (concurrent
    submits that all passed the early check)."""

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(
            f"this tenant has {active} queued or running jobs, the limit "
            f"({limit}, FITSERVE_MAX_ACTIVE_JOBS); retry when some have finished",
            headers={"Retry-After": "5"},
        )
        self.active = active


# ---------------------------------------------------------------- 5xx: the server's state


class ModelUnavailable(ServiceError):
    """A stored model cannot be served (for example its checkpoint fails its checksum)."""

    status_code = 503
    type = "model_unavailable"


class StorageUnavailable(ServiceError):
    """The artifact store refused a write (read-only, full): the request may succeed later."""

    status_code = 503
    type = "storage_error"


# ---------------------------------------------------------------- a job's end


class TrainingError(ServiceError):
    """Raised inside a worker; stored on the job as ``error: {type, message, epoch?, hint?}``.
    ``extra`` may also carry what the job keeps of a failed run (``history``, ``trace``)."""

    status_code = 422
    type = "training_failed"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message, **extra)

    def job_error(self) -> dict[str, Any]:
        """What the job row stores: type, message and, when known, epoch and hint."""
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        error.update({k: v for k, v in self.extra.items() if k in ("epoch", "hint")})
        return error


class Diverged(TrainingError):
    type = "diverged"


class Cancelled(TrainingError):
    type = "cancelled"


class InvalidTargets(TrainingError):
    type = "invalid_targets"


class Overflow(TrainingError):
    type = "overflow"


class DatasetMissing(TrainingError):
    type = "dataset_missing"


class ArtifactsFailed(TrainingError):
    """The job's data or checkpoint could not be read or written (the server's storage)."""

    status_code = 503
    type = "storage_error"


def not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"{kind} {ident!r} not found")
