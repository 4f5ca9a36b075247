"""The one error hierarchy. Every domain error is a ``ServiceError`` carrying its HTTP
status and a stable ``type``; ``error_body`` is the one place the JSON error shape
``{"error": {"type": ..., "message": ..., "field"?: ...}}`` is built (the FastAPI handlers,
the Origin/Host guard and the predict lane all call it). Nothing here imports FastAPI."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, ClassVar

MAX_MESSAGE_CHARS = 500
"""Longest error message sent: a message quoting client input is cut (with an ellipsis)."""


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def error_body(type_: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON error shape every route answers with. A message never carries more than
    ``MAX_MESSAGE_CHARS`` characters, whatever client input it quotes."""
    body: dict[str, Any] = {"type": type_, "message": clip(message, MAX_MESSAGE_CHARS)}
    if field is not None:
        body["field"] = clip(field, 200)
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


class Unavailable(ServiceError):
    """The server cannot do this now (its database is away or locked, it is stopping): the
    same request may succeed later, after ``Retry-After`` seconds."""

    status_code = 503
    type = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)}, **extra)


class InsufficientStorage(ServiceError):
    """The disk under the data directory is full: nothing new can be stored until space is
    freed (deleting datasets and models still works)."""

    status_code = 507
    type = "insufficient_storage"

    def __init__(self, message: str = "the server's disk is full: nothing new can be stored "
                 "until space is freed (deleting datasets or models frees some)",
                 **extra: Any) -> None:
        super().__init__(message, headers={"Retry-After": "30"}, **extra)


_DISK_FULL_ERRNOS = {28, 122}  # ENOSPC, EDQUOT


def is_disk_full(exc: BaseException) -> bool:
    """An OSError for a full disk or quota, or SQLite's "database or disk is full"."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return "disk is full" in text or "no space left" in text


def fault_of(exc: BaseException) -> ServiceError | None:
    """The client-facing error for a fault of the server's own (a full disk, the database
    away or locked, storage refusing writes), or None for anything else (a bug: a 500).
    Checked by type name so that this module imports no SQLAlchemy."""
    if isinstance(exc, ServiceError):
        return exc
    if is_disk_full(exc):
        return InsufficientStorage()
    module = type(exc).__module__ or ""
    if module.startswith("sqlalchemy") and type(exc).__name__ in (
            "OperationalError", "TimeoutError", "DisconnectionError", "InterfaceError"):
        return Unavailable("the metadata database is unavailable; retry shortly")
    if isinstance(exc, OSError) and exc.errno in (5, 30):  # EIO, EROFS
        return StorageUnavailable("the server's storage refuses writes; retry later")
    return None


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


class ModelMissing(TrainingError):
    """A batch prediction's model was deleted, or its checkpoint cannot be served."""

    type = "model_missing"


class PredictionFailed(TrainingError):
    """A batch prediction's rows cannot be scored (a value the model refuses, an overflow)."""

    type = "prediction_failed"


class ArtifactsFailed(TrainingError):
    """The job's data or checkpoint could not be read or written (the server's storage)."""

    status_code = 503
    type = "storage_error"


def job_already_finished(job_id: str, status: str) -> Conflict:
    """The 409 for cancelling a job that has ended."""
    if status == "cancelled":
        return Conflict(f"job {clip(job_id, 80)!r} is already cancelled")
    return Conflict(f"job {clip(job_id, 80)!r} has already finished ({status}); there is "
                    "nothing to cancel")


# ---------------------------------------------------------------- unknown fields

# names people reach for, from PyTorch, scikit-learn and Keras, and the field each means here;
# one is offered only where that field exists (an optimizer's ``lr``, a job's ``epochs``)
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "learning_rate": ("lr",), "learningrate": ("lr",), "lr0": ("lr",),
    "n_epochs": ("epochs",), "num_epochs": ("epochs",), "epoch": ("epochs",),
    "max_epochs": ("epochs",), "max_iter": ("epochs",), "iterations": ("epochs",),
    "steps": ("epochs",), "batch": ("batch_size",), "batchsize": ("batch_size",),
    "optim": ("optimizer",), "opt": ("optimizer",), "solver": ("optimizer",),
    "lr_scheduler": ("scheduler",), "schedule": ("scheduler",),
    "random_state": ("seed",), "random_seed": ("seed",),
    "val_fraction": ("validation_fraction",), "validation_split": ("validation_fraction",),
    "val_split": ("validation_fraction",), "test_size": ("validation_fraction",),
    "normalize": ("standardize",), "normalise": ("standardize",), "scale": ("standardize",),
    "standardise": ("standardize",), "loss_fn": ("loss",), "criterion": ("loss",),
    "objective": ("loss",), "hidden_layers": ("hidden",), "hidden_sizes": ("hidden",),
    "hidden_units": ("hidden",), "layers": ("hidden",), "type": ("kind", "name"),
    "model_type": ("kind", "model"), "activation_fn": ("activation",),
    "clip_grad_norm": ("grad_clip",), "max_grad_norm": ("grad_clip",),
    "gradient_clip": ("grad_clip",), "clipnorm": ("grad_clip",), "decay": ("weight_decay",),
    "l2": ("weight_decay",), "wd": ("weight_decay",), "beta": ("betas",),
    "epsilon": ("eps",), "intercept": ("bias",),
    "fit_intercept": ("bias",), "use_bias": ("bias",), "n_classes": ("classes",),
    "num_classes": ("classes",), "features": ("x", "feature_names"), "inputs": ("x",),
    "input": ("x",), "data": ("x",), "targets": ("y", "target_names"), "labels": ("y",),
    "target": ("y",), "outputs": ("y",), "dataset": ("dataset_id",), "name": ("model_name",),
    "model_id": ("model",),
}


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name ``name`` most likely meant: the same name in another case, a common
    synonym (``learning_rate`` for ``lr``), or the closest spelling; None when none is close."""
    known = list(known)
    if len(name) > 100:  # client input: no name here is that long
        return None
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    by_key = {k.lower(): k for k in known}
    if key in by_key:
        return by_key[key]
    for candidate in _SYNONYMS.get(key, ()):
        if candidate in known:
            return candidate
    close = difflib.get_close_matches(key, list(by_key), n=1, cutoff=0.6)
    return by_key[close[0]] if close else None


def unknown_field_message(names: Iterable[str], known: Iterable[str], prefix: str = "") -> str:
    """``unknown field 'learning_rate'; did you mean 'lr'?``, or the known names when none is
    close. ``prefix``: where the object sits in the body (``optimizer.``)."""
    names, known = sorted(names), sorted(known)
    guesses = [(prefix + clip(n, 60), closest_name(n, known)) for n in names[:5]]
    if len(guesses) == 1:
        text = f"unknown field {guesses[0][0]!r}"
        if guesses[0][1]:
            return f"{text}; did you mean {prefix + guesses[0][1]!r}?"
    else:
        shown = [repr(n) + (f" (did you mean {prefix + g!r}?)" if g else "") for n, g in guesses]
        if len(names) > 5:
            shown.append(f"and {len(names) - 5} more")
        text = f"unknown fields {', '.join(shown)}"
    if known and not any(g for _, g in guesses):
        where = f" of {prefix[:-1]}" if prefix else ""
        text += f"; the fields{where} are {', '.join(known)}"
    return text


def not_found(kind: str, ident: str) -> NotFound:
    # the id is client input (a 100 MB model name would be echoed whole): a short prefix
    return NotFound(f"{kind} {clip(ident, 80)!r} not found")
