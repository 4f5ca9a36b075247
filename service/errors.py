"""Domain errors. Each carries its HTTP status and a stable ``type``; one handler turns them
into ``{"error": {"type": ..., "message": ...}}``. Nothing here imports FastAPI."""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    status_code: ClassVar[int] = 400
    type: ClassVar[str] = "bad_request"

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
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return {"error": body}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status_code})"


class MalformedBody(ServiceError):
    status_code = 400
    type = "malformed_body"


class Unauthorized(ServiceError):
    status_code = 401
    type = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    type = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    type = "not_found"


class MethodNotAllowed(ServiceError):
    status_code = 405
    type = "method_not_allowed"


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


class ModelUnavailable(ServiceError):
    """A stored model cannot be served (for example its checkpoint fails its checksum)."""

    status_code = 503
    type = "model_unavailable"


class StorageUnavailable(ServiceError):
    """The artifact store refused a write (read-only, full): the request may succeed later."""

    status_code = 503
    type = "storage_error"


class TrainingError(Exception):
    """Raised inside a worker; stored on the job as ``error: {type, message, ...}``."""

    type: ClassVar[str] = "training_failed"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class Diverged(TrainingError):
    type = "diverged"


class Cancelled(TrainingError):
    type = "cancelled"


def not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"{kind} {ident!r} not found")
