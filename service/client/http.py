"""A Python client of the fitserve API (httpx): ``Client`` and ``AsyncClient``.

    with Client("http://127.0.0.1:8000") as fs:
        ds = fs.upload(x=[[3.3], [4.4], [5.5]], y=[[1.7], [2.76], [2.09]], name="seed")
        model = fs.train(dataset_id=ds["id"], epochs=1000, lr=0.01, model_name="seed",
                         on_progress=lambda p: print(p["epoch"], p["loss"]))
        print(model["weight"], model["bias"])
        print(fs.predict([[3.3]], model="seed")["y"])

The server's errors come back as ``FitserveError`` (one subclass per status) carrying the
server's error ``type``, ``message``, ``field`` and ``hint``; a job that does not succeed in
``train`` raises ``JobFailed``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from service.client import frames

DEFAULT_URL = "http://127.0.0.1:8000"

Progress = Callable[[dict[str, Any]], None]


def default_url() -> str:
    """``FITSERVE_URL``, else the server ``make serve`` starts."""
    return os.environ.get("FITSERVE_URL") or DEFAULT_URL


def _auth_headers(api_key: str | None) -> dict[str, str]:
    key = api_key or os.environ.get("FITSERVE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


# ---------------------------------------------------------------- errors


class FitserveError(Exception):
    """An error answer of the server: its HTTP status and its ``{"error": {...}}`` body.
    ``status`` is 0 where no HTTP answer was an error (a job that failed, a stream that
    ended); ``hint``, when the server gives one, says what to try."""

    def __init__(self, status: int, type: str, message: str, field: str | None = None,
                 body: dict[str, Any] | None = None, hint: str | None = None) -> None:
        super().__init__(f"{type}: {message}")
        self.status = status
        self.type = type
        self.message = message
        self.field = field
        self.body = body or {}
        self.hint = hint

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, type={self.type!r}, " \
               f"message={self.message!r})"


class BadRequest(FitserveError):
    """400: the body is malformed."""


class NotFoundError(FitserveError):
    """404: no such dataset, job, model or route."""


class ConflictError(FitserveError):
    """409: the resource's state forbids it."""


class UnsupportedMediaTypeError(FitserveError):
    """415."""


class InvalidInputError(FitserveError):
    """422: invalid input; ``field`` names the field at fault."""


class ServerError(FitserveError):
    """5xx."""


class JobFailed(FitserveError):
    """A job ended failed or cancelled; ``job`` is the job as the server reports it. Its
    ``status`` is 0: the requests succeeded, the job did not (``job["status"]`` says how)."""

    def __init__(self, job: dict[str, Any]) -> None:
        err = job.get("error") or {}
        super().__init__(0, err.get("type", job["status"]),
                         err.get("message", f"job {job['id']} {job['status']}"),
                         hint=err.get("hint"))
        self.job = job


class SweepFailed(FitserveError):
    """A sweep ended failed or cancelled; ``sweep`` is the sweep as the server reports it
    (its trials with their errors). Its ``status`` is 0, as ``JobFailed``'s."""

    def __init__(self, sweep: dict[str, Any]) -> None:
        err = sweep.get("error") or {}
        super().__init__(0, err.get("type", sweep["status"]),
                         err.get("message", f"sweep {sweep['id']} {sweep['status']}"))
        self.sweep = sweep


_BY_STATUS: dict[int, type[FitserveError]] = {
    400: BadRequest, 404: NotFoundError, 409: ConflictError, 415: UnsupportedMediaTypeError,
    422: InvalidInputError,
}


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = orjson.loads(response.content)
        err = body["error"]
        type_, message, fld, hint = err["type"], err["message"], err.get("field"), \
            err.get("hint")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        body, type_, message, fld, hint = {}, "http_error", response.text[:500], None, None
    cls = _BY_STATUS.get(response.status_code,
                         ServerError if response.status_code >= 500 else FitserveError)
    raise cls(response.status_code, type_, message, fld, body, hint)


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class Event:
    """One server-sent event of a job: ``progress`` (data: epoch, epochs, loss, val_loss) or
    ``end`` (data: the finished job)."""

    event: str
    id: str
    data: dict[str, Any]


@dataclass(frozen=True)
class _Req:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bool = False  # the bytes of the answer, not JSON


def _page(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _answer(req: _Req, response: httpx.Response) -> Any:
    """The answer's bytes (``raw``), None for 204 No Content, else its JSON."""
    _raise_for(response)
    if req.raw:
        return response.content
    return None if response.status_code == 204 else orjson.loads(response.content)


class _Api:
    """The requests of each call, shared by the sync and the async client."""

    @staticmethod
    def upload(x: Any, y: Any, name: str | None, feature_names: list[str] | None,
               target_names: list[str] | None) -> _Req:
        body = _page({"x": x, "y": y, "name": name, "feature_names": feature_names,
                      "target_names": target_names})
        return _Req("POST", "/v1/datasets", json=body)

    @staticmethod
    def upload_csv(data: bytes | str | Path, target: str | list[str],
                   features: list[str] | None, name: str | None) -> _Req:
        if isinstance(data, Path):
            data = data.read_bytes()
        elif isinstance(data, str):
            data = data.encode()
        targets = [target] if isinstance(target, str) else list(target)
        params = _page({"target": targets, "features": features, "name": name})
        return _Req("POST", "/v1/datasets", params=params, content=data,
                    headers={"content-type": "text/csv"})

    @staticmethod
    def upload_table(data: Any, target: str | list[str], features: list[str] | None,
                     name: str | None, schema: dict[str, str] | None) -> _Req:
        if frames.is_frame(data):
            content, media = frames.frame_body(data)
        else:
            path = Path(data)
            media, content = frames.file_media(path), path.read_bytes()
        targets = [target] if isinstance(target, str) else list(target)
        params = _page({"target": targets, "features": features, "name": name, "schema": [
            f"{k}:{v}" for k, v in (schema or {}).items()] or None})
        return _Req("POST", "/v1/datasets", params=params, content=content,
                    headers={"content-type": media})

    @staticmethod
    def predict(x: Any, model: str | None, route_key: str | None = None) -> _Req:
        return _Req("POST", "/predict", json=_page({**frames.predict_body(x), "model": model}),
                    headers={"X-Fitserve-Route-Key": route_key} if route_key else {})

    @staticmethod
    def submit(dataset_id: str | None, x: Any, y: Any, spec: dict[str, Any]) -> _Req:
        return _Req("POST", "/v1/jobs",
                    json={**_page({"dataset_id": dataset_id, "x": x, "y": y}), **spec})


class _Lifecycle:
    """The requests of a model's life after training (issue 15), shared by both clients."""

    @staticmethod
    def evaluate(model_id: str, dataset_id: str) -> _Req:
        return _Req("POST", f"/v1/models/{model_id}/evaluations",
                    json={"dataset_id": dataset_id})

    @staticmethod
    def evaluations(model_id: str, limit: int) -> _Req:
        return _Req("GET", f"/v1/models/{model_id}/evaluations", params={"limit": limit})

    @staticmethod
    def export(model_id: str, format: str) -> _Req:
        return _Req("GET", f"/v1/models/{model_id}/export", params={"format": format},
                    raw=True)

    @staticmethod
    def import_checkpoint(data: bytes | Path, name: str, sha256: str | None) -> _Req:
        import hashlib

        blob = data.read_bytes() if isinstance(data, Path) else data
        return _Req("POST", "/v1/models", params={"name": name}, content=blob, headers={
            "content-type": "application/octet-stream",
            "X-Checkpoint-SHA256": sha256 or hashlib.sha256(blob).hexdigest()})


class _Names:
    """The requests of model names: aliases, their history, traffic splits (issue 15)."""

    @staticmethod
    def get(name: str) -> _Req:
        return _Req("GET", f"/v1/model-names/{name}")

    @staticmethod
    def set_alias(name: str, alias: str, version: int) -> _Req:
        return _Req("PUT", f"/v1/model-names/{name}/aliases/{alias}", json={"version": version})

    @staticmethod
    def delete_alias(name: str, alias: str) -> _Req:
        return _Req("DELETE", f"/v1/model-names/{name}/aliases/{alias}")

    @staticmethod
    def history(name: str, limit: int) -> _Req:
        return _Req("GET", f"/v1/model-names/{name}/history", params={"limit": limit})

    @staticmethod
    def set_traffic(name: str, weights: dict[str, int]) -> _Req:
        return _Req("PUT", f"/v1/model-names/{name}/traffic", json=weights)

    @staticmethod
    def clear_traffic(name: str) -> _Req:
        return _Req("DELETE", f"/v1/model-names/{name}/traffic")

    @staticmethod
    def traffic(view: dict[str, Any]) -> dict[str, Any] | None:
        """A name's split as ``set_traffic`` answers it (``weights``, and the version each
        target points at now), from the name's view; None without a split."""
        if not view.get("traffic"):
            return None
        aliases = view["aliases"]
        return {"name": view["name"], "weights": dict(view["traffic"]),
                "versions": {t: int(aliases.get(t, t)) for t in view["traffic"]}}


class _Predictions:
    """The requests of batch predictions (``POST /v1/predictions``, issue 15)."""

    @staticmethod
    def submit(model: str, dataset_id: str, format: str, include_input: bool,
               idempotency_key: str | None) -> _Req:
        return _Req("POST", "/v1/predictions",
                    json={"model": model, "dataset_id": dataset_id, "format": format,
                          "include_input": include_input},
                    headers={"Idempotency-Key": idempotency_key} if idempotency_key else {})

    @staticmethod
    def get(prediction_id: str, wait: float = 0) -> _Req:
        return _Req("GET", f"/v1/predictions/{prediction_id}",
                    params={"wait": wait} if wait else None)

    @staticmethod
    def list(status: str | None, limit: int) -> _Req:
        return _Req("GET", "/v1/predictions", params=_page({"status": status, "limit": limit}))

    @staticmethod
    def result(prediction_id: str) -> _Req:
        return _Req("GET", f"/v1/predictions/{prediction_id}/result", raw=True)


_ENDED = ("succeeded", "failed", "cancelled")


def _prediction_ended(prediction: dict[str, Any]) -> dict[str, Any]:
    if prediction["status"] != "succeeded":
        raise JobFailed(prediction)
    return prediction


class _Sweeps:
    """The requests of sweeps (issue 14), shared by both clients."""

    @staticmethod
    def submit(search_space: dict[str, Any], dataset_id: str | None, x: Any, y: Any,
               options: dict[str, Any], job: dict[str, Any]) -> _Req:
        base = {**_page({"dataset_id": dataset_id, "x": x, "y": y}), **job}
        return _Req("POST", "/v1/sweeps",
                    json={"job": base, "search_space": search_space, **_page(options)})

    @staticmethod
    def list(status: str | None, limit: int) -> _Req:
        return _Req("GET", "/v1/sweeps", params=_page({"status": status, "limit": limit}))


def _sweep_ended(sweep: dict[str, Any]) -> dict[str, Any]:
    """A finished sweep, or ``SweepFailed`` when it did not succeed."""
    if sweep["status"] != "succeeded":
        raise SweepFailed(sweep)
    return sweep


def _stream_ended(what: str, closes: int) -> FitserveError:
    """``what``: "job job_..." or "sweep swp_..."."""
    return FitserveError(0, "stream_ended", f"the event stream of {what} closed {closes} "
                         f"times before the {what.split()[0]} ended")


def _event(sse: ServerSentEvent) -> Event:
    return Event(sse.event, sse.id, orjson.loads(sse.data) if sse.data else {})


def _event_or_none(sse: ServerSentEvent) -> Event | None:
    """The event, or None for the server's keep-alive comment."""
    if sse.event == "message" and not sse.data:
        return None
    return _event(sse)


# ---------------------------------------------------------------- sync


class Client:
    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        """``url``: else ``FITSERVE_URL``, else http://127.0.0.1:8000. ``api_key``: else
        ``FITSERVE_API_KEY``, else none (for a server with authentication off)."""
        self.url = (url or default_url()).rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport,
                                  headers=_auth_headers(api_key))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, req: _Req) -> Any:
        r = self._http.request(req.method, req.path, params=req.params, json=req.json,
                               content=req.content, headers=req.headers)
        return _answer(req, r)

    def health(self) -> dict[str, Any]:
        return self._call(_Req("GET", "/readyz"))

    def upload(self, x: Any, y: Any, *, name: str | None = None,
               feature_names: list[str] | None = None,
               target_names: list[str] | None = None) -> dict[str, Any]:
        """Store a dataset from rows; the same content twice gives the stored one back."""
        return self._call(_Api.upload(x, y, name, feature_names, target_names))

    def upload_csv(self, data: bytes | str | Path, target: str | list[str], *,
                   features: list[str] | None = None, name: str | None = None
                   ) -> dict[str, Any]:
        """Store a dataset from CSV (a header row; ``target`` names the target column(s))."""
        return self._call(_Api.upload_csv(data, target, features, name))

    def upload_table(self, data: Any, target: str | list[str], *,
                     features: list[str] | None = None, name: str | None = None,
                     schema: dict[str, str] | None = None) -> dict[str, Any]:
        """Store a table: a pandas or polars DataFrame (sent as Arrow), or a .csv,
        .parquet, .arrow/.arrows, .feather or .ndjson file; ``schema`` overrides the
        inferred column types (``{"zip": "categorical"}``)."""
        return self._call(_Api.upload_table(data, target, features, name, schema))

    def datasets(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._call(_Req("GET", "/v1/datasets", params={"limit": limit}))["data"]

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._call(_Req("GET", f"/v1/datasets/{dataset_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset (a ``ConflictError`` while a queued or running job uses it)."""
        self._call(_Req("DELETE", f"/v1/datasets/{dataset_id}"))

    def submit(self, *, dataset_id: str | None = None, x: Any = None, y: Any = None,
               **spec: Any) -> dict[str, Any]:
        """Submit a training job (hyperparameters as in ``POST /v1/jobs``); returns it queued."""
        return self._call(_Api.submit(dataset_id, x, y, spec))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call(_Req("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params = _page({"status": status, "limit": limit})
        return self._call(_Req("GET", "/v1/jobs", params=params))["data"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call(_Req("POST", f"/v1/jobs/{job_id}/cancel"))

    def history(self, job_id: str) -> dict[str, Any]:
        return self._call(_Req("GET", f"/v1/jobs/{job_id}/history"))

    def delete_job(self, job_id: str) -> None:
        """Delete an ended job and its history (``ConflictError`` while it is queued or
        running: ``cancel`` it first); the model it trained stays."""
        self._call(_Req("DELETE", f"/v1/jobs/{job_id}"))

    def events(self, job_id: str, last_event_id: str | None = None, *,
               reconnects: int = 5) -> Iterator[Event]:
        """The job's events until ``end``. A dropped stream is resumed where it stopped
        (``Last-Event-ID``), at most ``reconnects`` times in a row."""
        yield from self._stream(f"/v1/jobs/{job_id}/events", f"job {job_id}", last_event_id,
                                reconnects)

    def _stream(self, path: str, what: str, last_event_id: str | None,
                reconnects: int) -> Iterator[Event]:
        """Server-sent events from ``path`` until ``end``, resumed after a drop."""
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                with connect_sse(self._http, "GET", path, headers=headers,
                                 timeout=httpx.Timeout(30, read=None)) as es:
                    if es.response.status_code == 204:
                        return
                    if es.response.status_code >= 400:
                        es.response.read()
                        _raise_for(es.response)
                    for sse in es.iter_sse():
                        failures = 0
                        event = _event_or_none(sse)
                        if event is None:
                            continue
                        last_event_id = event.id or last_event_id
                        yield event
                        if event.event == "end":
                            return
            except httpx.TransportError:
                if failures >= reconnects:
                    raise
            else:  # the stream closed before the end (a server restart)
                if failures >= reconnects:
                    raise _stream_ended(what, failures + 1)
            failures += 1
            time.sleep(min(0.1 * 2 ** failures, 5.0))

    def wait(self, job_id: str, on_progress: Progress | None = None) -> dict[str, Any]:
        """Follow the job to its end; returns the finished job."""
        for event in self.events(job_id):
            if event.event == "progress" and on_progress is not None:
                on_progress(event.data)
            elif event.event == "end":
                return event.data
        return self.job(job_id)

    def train(self, *, dataset_id: str | None = None, x: Any = None, y: Any = None,
              on_progress: Progress | None = None, **spec: Any) -> dict[str, Any]:
        """Submit, follow and return the fitted model; ``JobFailed`` unless it succeeds."""
        job = self.wait(self.submit(dataset_id=dataset_id, x=x, y=y, **spec)["id"],
                        on_progress)
        if job["status"] != "succeeded":
            raise JobFailed(job)
        return self.model(job["model_id"])

    def model(self, model_id: str) -> dict[str, Any]:
        return self._call(_Req("GET", f"/v1/models/{model_id}"))

    def models(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params = _page({"name": name, "limit": limit})
        return self._call(_Req("GET", "/v1/models", params=params))["data"]

    def delete_model(self, model_id: str) -> None:
        """Delete a model: its checkpoint and its version of its name."""
        self._call(_Req("DELETE", f"/v1/models/{model_id}"))

    def predict(self, x: Any, model: str | None = None, *,
                route_key: str | None = None) -> dict[str, Any]:
        """``y`` for rows ``x`` from a model id, name, ``name@alias`` or ``name@3``
        (default: the latest model); ``version`` says which version answered. ``x``: a
        matrix, or by name a DataFrame, a dict of columns or a list of records.
        ``route_key`` (a user id, say) keeps a name's traffic split on one version."""
        return self._call(_Api.predict(x, model, route_key))

    def model_plot(self, model_id: str) -> bytes:
        return self._call(_Req("GET", f"/v1/models/{model_id}/plot.png", raw=True))

    def loss_plot(self, job_id: str) -> bytes:
        return self._call(_Req("GET", f"/v1/jobs/{job_id}/loss.png", raw=True))

    def evaluate(self, model_id: str, dataset_id: str) -> dict[str, Any]:
        """Score a model on a stored dataset: metrics, rows used and refused."""
        return self._call(_Lifecycle.evaluate(model_id, dataset_id))

    def evaluations(self, model_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """A model's evaluations, newest first."""
        return self._call(_Lifecycle.evaluations(model_id, limit))["data"]

    def evaluation(self, evaluation_id: str) -> dict[str, Any]:
        return self._call(_Req("GET", f"/v1/evaluations/{evaluation_id}"))

    def evaluation_plot(self, evaluation_id: str) -> bytes:
        """Predicted against actual, or the confusion matrix, as PNG."""
        return self._call(_Req("GET", f"/v1/evaluations/{evaluation_id}/plot.png", raw=True))

    def checkpoint(self, model_id: str) -> bytes:
        """The model's safetensors file (what ``import_checkpoint`` takes elsewhere)."""
        return self._call(_Req("GET", f"/v1/models/{model_id}/checkpoint", raw=True))

    def export(self, model_id: str, format: str = "onnx") -> bytes:
        """The model as an ONNX graph (input ``x``, or one per column for a model trained on
        columns; outputs ``y``, and for classifiers ``labels`` and ``probabilities``)."""
        return self._call(_Lifecycle.export(model_id, format))

    def import_checkpoint(self, data: bytes | Path, *, name: str,
                          sha256: str | None = None) -> dict[str, Any]:
        """Register a fitserve checkpoint under ``name`` (its next version); ``sha256``
        defaults to the file's own (pass the one its server sent to catch a bad copy)."""
        return self._call(_Lifecycle.import_checkpoint(data, name, sha256))

    # ------------------------------------------------------------ model names

    def model_name(self, name: str) -> dict[str, Any]:
        """A name's versions, aliases (``latest`` included) and traffic split."""
        return self._call(_Names.get(name))

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Point ``alias`` at a version of ``name`` (recorded in its history)."""
        return self._call(_Names.set_alias(name, alias, version))

    def delete_alias(self, name: str, alias: str) -> None:
        self._call(_Names.delete_alias(name, alias))

    def alias_history(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """Every move of the name's aliases, newest first."""
        return self._call(_Names.history(name, limit))["data"]

    def set_traffic(self, name: str, weights: dict[str, int]) -> dict[str, Any]:
        """Split predict by ``name`` over aliases or versions: ``{"champion": 90,
        "challenger": 10}`` (whole percents, summing to 100)."""
        return self._call(_Names.set_traffic(name, weights))

    def clear_traffic(self, name: str) -> None:
        self._call(_Names.clear_traffic(name))

    def traffic(self, name: str) -> dict[str, Any] | None:
        """The name's traffic split: ``{"name", "weights", "versions"}`` (as ``set_traffic``
        answers), or None when predict by the name answers from its latest version."""
        return _Names.traffic(self._call(_Names.get(name)))


    # ------------------------------------------------------------ sweeps

    def submit_sweep(self, search_space: dict[str, Any], *, dataset_id: str | None = None,
                     x: Any = None, y: Any = None, strategy: str | None = None,
                     objective: str | None = None, direction: str | None = None,
                     max_trials: int | None = None, max_parallel: int | None = None,
                     seed: int | None = None, pruning: dict[str, Any] | None = None,
                     model_name: str | None = None, job: dict[str, Any] | None = None,
                     **spec: Any) -> dict[str, Any]:
        """Start a sweep over a base job: ``job`` and ``spec`` are what ``submit`` takes
        (``epochs=1000``; the training seed as ``job={"seed": 0}``: ``seed`` is the
        sampler's); returns it queued."""
        options = {"strategy": strategy, "objective": objective, "direction": direction,
                   "max_trials": max_trials, "max_parallel": max_parallel, "seed": seed,
                   "pruning": pruning, "model_name": model_name}
        return self._call(_Sweeps.submit(search_space, dataset_id, x, y, options,
                                         {**(job or {}), **spec}))

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """A sweep: status, progress, best trial so far, every trial."""
        return self._call(_Req("GET", f"/v1/sweeps/{sweep_id}"))

    def sweeps(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self._call(_Sweeps.list(status, limit))["data"]

    # ------------------------------------------------------------ batch predictions

    def submit_prediction(self, model: str, dataset_id: str, *, format: str = "csv",
                          include_input: bool = False,
                          idempotency_key: str | None = None) -> dict[str, Any]:
        """Queue a batch prediction of a stored dataset; returns it (status queued)."""
        return self._call(_Predictions.submit(model, dataset_id, format, include_input,
                                              idempotency_key))

    def prediction(self, prediction_id: str, wait: float = 0) -> dict[str, Any]:
        """A batch prediction; ``wait``: seconds to wait for it to end (at most 60)."""
        return self._call(_Predictions.get(prediction_id, wait))

    def predictions(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self._call(_Predictions.list(status, limit))["data"]

    def cancel_prediction(self, prediction_id: str) -> dict[str, Any]:
        return self._call(_Req("POST", f"/v1/predictions/{prediction_id}/cancel"))

    def delete_prediction(self, prediction_id: str) -> None:
        self._call(_Req("DELETE", f"/v1/predictions/{prediction_id}"))

    def prediction_result(self, prediction_id: str) -> bytes:
        """The result file's bytes (CSV, Parquet or JSON lines, as submitted)."""
        return self._call(_Predictions.result(prediction_id))

    def batch_predict(self, model: str, dataset_id: str, *, format: str = "csv",
                      include_input: bool = False, on_progress: Progress | None = None,
                      idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a batch prediction and follow it to its end (its events: ``on_progress``
        gets each progress event's rows and total); returns it, ``JobFailed`` unless it
        succeeded. Its file: ``prediction_result(p["id"])``."""
        p = self.submit_prediction(model, dataset_id, format=format,
                                   include_input=include_input, idempotency_key=idempotency_key)
        for event in self._stream(f"/v1/predictions/{p['id']}/events",
                                  f"prediction {p['id']}", None, 5):
            if event.event == "progress" and on_progress is not None:
                on_progress(event.data)
            elif event.event == "end":
                p = event.data
        if p["status"] not in _ENDED:  # the stream had ended before (204)
            p = self.prediction(p["id"])
        return _prediction_ended(p)

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        """Cancel a sweep and every trial still queued or running."""
        return self._call(_Req("POST", f"/v1/sweeps/{sweep_id}/cancel"))

    def sweep_plot(self, sweep_id: str) -> bytes:
        return self._call(_Req("GET", f"/v1/sweeps/{sweep_id}/plot.png", raw=True))

    def sweep_events(self, sweep_id: str, last_event_id: str | None = None, *,
                     reconnects: int = 5) -> Iterator[Event]:
        """The sweep's events until ``end``: ``trial`` (a trial ended), ``progress`` and
        ``end`` (the sweep). A dropped stream is resumed where it stopped."""
        yield from self._stream(f"/v1/sweeps/{sweep_id}/events", f"sweep {sweep_id}",
                                last_event_id, reconnects)

    def wait_sweep(self, sweep_id: str, on_event: Progress | None = None) -> dict[str, Any]:
        """Follow a sweep to its end (``on_event`` gets each event's data, its ``event``
        added: ``trial`` or ``progress``); returns the finished sweep."""
        for event in self.sweep_events(sweep_id):
            if event.event == "end":
                return event.data
            if on_event is not None:
                on_event({"event": event.event, **event.data})
        return self.get_sweep(sweep_id)

    def sweep(self, search_space: dict[str, Any], *, on_event: Progress | None = None,
              **options: Any) -> dict[str, Any]:
        """Run a sweep to its end (``submit_sweep``'s arguments); returns it with its best
        trial and ``model_id``; ``SweepFailed`` unless it succeeds."""
        sweep = self.submit_sweep(search_space, **options)
        return _sweep_ended(self.wait_sweep(sweep["id"], on_event))

# ---------------------------------------------------------------- async


class AsyncClient:
    """The same calls as ``Client``, awaitable."""

    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``url``: else ``FITSERVE_URL``, else http://127.0.0.1:8000. ``api_key``: else
        ``FITSERVE_API_KEY``, else none (for a server with authentication off)."""
        self.url = (url or default_url()).rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport,
                                       headers=_auth_headers(api_key))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, req: _Req) -> Any:
        r = await self._http.request(req.method, req.path, params=req.params, json=req.json,
                                     content=req.content, headers=req.headers)
        return _answer(req, r)

    async def health(self) -> dict[str, Any]:
        return await self._call(_Req("GET", "/readyz"))

    async def upload(self, x: Any, y: Any, *, name: str | None = None,
                     feature_names: list[str] | None = None,
                     target_names: list[str] | None = None) -> dict[str, Any]:
        return await self._call(_Api.upload(x, y, name, feature_names, target_names))

    async def upload_csv(self, data: bytes | str | Path, target: str | list[str], *,
                         features: list[str] | None = None, name: str | None = None
                         ) -> dict[str, Any]:
        return await self._call(_Api.upload_csv(data, target, features, name))

    async def upload_table(self, data: Any, target: str | list[str], *,
                           features: list[str] | None = None, name: str | None = None,
                           schema: dict[str, str] | None = None) -> dict[str, Any]:
        return await self._call(_Api.upload_table(data, target, features, name, schema))

    async def datasets(self, limit: int = 50) -> list[dict[str, Any]]:
        return (await self._call(_Req("GET", "/v1/datasets", params={"limit": limit})))["data"]

    async def dataset(self, dataset_id: str) -> dict[str, Any]:
        return await self._call(_Req("GET", f"/v1/datasets/{dataset_id}"))

    async def delete_dataset(self, dataset_id: str) -> None:
        await self._call(_Req("DELETE", f"/v1/datasets/{dataset_id}"))

    async def submit(self, *, dataset_id: str | None = None, x: Any = None, y: Any = None,
                     **spec: Any) -> dict[str, Any]:
        return await self._call(_Api.submit(dataset_id, x, y, spec))

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._call(_Req("GET", f"/v1/jobs/{job_id}"))

    async def jobs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params = _page({"status": status, "limit": limit})
        return (await self._call(_Req("GET", "/v1/jobs", params=params)))["data"]

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._call(_Req("POST", f"/v1/jobs/{job_id}/cancel"))

    async def history(self, job_id: str) -> dict[str, Any]:
        return await self._call(_Req("GET", f"/v1/jobs/{job_id}/history"))

    async def delete_job(self, job_id: str) -> None:
        await self._call(_Req("DELETE", f"/v1/jobs/{job_id}"))

    async def events(self, job_id: str, last_event_id: str | None = None, *,
                     reconnects: int = 5) -> AsyncIterator[Event]:
        async for event in self._stream(f"/v1/jobs/{job_id}/events", f"job {job_id}",
                                        last_event_id, reconnects):
            yield event

    async def _stream(self, path: str, what: str, last_event_id: str | None,
                      reconnects: int) -> AsyncIterator[Event]:
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                async with aconnect_sse(self._http, "GET", path, headers=headers,
                                        timeout=httpx.Timeout(30, read=None)) as es:
                    if es.response.status_code == 204:
                        return
                    if es.response.status_code >= 400:
                        await es.response.aread()
                        _raise_for(es.response)
                    async for sse in es.aiter_sse():
                        failures = 0
                        event = _event_or_none(sse)
                        if event is None:
                            continue
                        last_event_id = event.id or last_event_id
                        yield event
                        if event.event == "end":
                            return
            except httpx.TransportError:
                if failures >= reconnects:
                    raise
            else:  # the stream closed before the end (a server restart)
                if failures >= reconnects:
                    raise _stream_ended(what, failures + 1)
            failures += 1
            await anyio.sleep(min(0.1 * 2 ** failures, 5.0))

    async def wait(self, job_id: str, on_progress: Progress | None = None) -> dict[str, Any]:
        async for event in self.events(job_id):
            if event.event == "progress" and on_progress is not None:
                on_progress(event.data)
            elif event.event == "end":
                return event.data
        return await self.job(job_id)

    async def train(self, *, dataset_id: str | None = None, x: Any = None, y: Any = None,
                    on_progress: Progress | None = None, **spec: Any) -> dict[str, Any]:
        job = await self.submit(dataset_id=dataset_id, x=x, y=y, **spec)
        job = await self.wait(job["id"], on_progress)
        if job["status"] != "succeeded":
            raise JobFailed(job)
        return await self.model(job["model_id"])

    async def model(self, model_id: str) -> dict[str, Any]:
        return await self._call(_Req("GET", f"/v1/models/{model_id}"))

    async def models(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params = _page({"name": name, "limit": limit})
        return (await self._call(_Req("GET", "/v1/models", params=params)))["data"]

    async def delete_model(self, model_id: str) -> None:
        await self._call(_Req("DELETE", f"/v1/models/{model_id}"))

    async def predict(self, x: Any, model: str | None = None, *,
                      route_key: str | None = None) -> dict[str, Any]:
        return await self._call(_Api.predict(x, model, route_key))

    async def model_plot(self, model_id: str) -> bytes:
        return await self._call(_Req("GET", f"/v1/models/{model_id}/plot.png", raw=True))

    async def loss_plot(self, job_id: str) -> bytes:
        return await self._call(_Req("GET", f"/v1/jobs/{job_id}/loss.png", raw=True))

    async def evaluate(self, model_id: str, dataset_id: str) -> dict[str, Any]:
        return await self._call(_Lifecycle.evaluate(model_id, dataset_id))

    async def evaluations(self, model_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return (await self._call(_Lifecycle.evaluations(model_id, limit)))["data"]

    async def evaluation(self, evaluation_id: str) -> dict[str, Any]:
        return await self._call(_Req("GET", f"/v1/evaluations/{evaluation_id}"))

    async def evaluation_plot(self, evaluation_id: str) -> bytes:
        return await self._call(_Req("GET", f"/v1/evaluations/{evaluation_id}/plot.png",
                                     raw=True))

    async def checkpoint(self, model_id: str) -> bytes:
        return await self._call(_Req("GET", f"/v1/models/{model_id}/checkpoint", raw=True))

    async def export(self, model_id: str, format: str = "onnx") -> bytes:
        return await self._call(_Lifecycle.export(model_id, format))

    async def import_checkpoint(self, data: bytes | Path, *, name: str,
                                sha256: str | None = None) -> dict[str, Any]:
        return await self._call(_Lifecycle.import_checkpoint(data, name, sha256))

    # ------------------------------------------------------------ model names

    async def model_name(self, name: str) -> dict[str, Any]:
        return await self._call(_Names.get(name))

    async def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        return await self._call(_Names.set_alias(name, alias, version))

    async def delete_alias(self, name: str, alias: str) -> None:
        await self._call(_Names.delete_alias(name, alias))

    async def alias_history(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        return (await self._call(_Names.history(name, limit)))["data"]

    async def set_traffic(self, name: str, weights: dict[str, int]) -> dict[str, Any]:
        return await self._call(_Names.set_traffic(name, weights))

    async def clear_traffic(self, name: str) -> None:
        await self._call(_Names.clear_traffic(name))

    async def traffic(self, name: str) -> dict[str, Any] | None:
        return _Names.traffic(await self._call(_Names.get(name)))

    # ------------------------------------------------------------ sweeps

    async def submit_sweep(self, search_space: dict[str, Any], *,
                           dataset_id: str | None = None, x: Any = None, y: Any = None,
                           strategy: str | None = None, objective: str | None = None,
                           direction: str | None = None, max_trials: int | None = None,
                           max_parallel: int | None = None, seed: int | None = None,
                           pruning: dict[str, Any] | None = None,
                           model_name: str | None = None, job: dict[str, Any] | None = None,
                           **spec: Any) -> dict[str, Any]:
        options = {"strategy": strategy, "objective": objective, "direction": direction,
                   "max_trials": max_trials, "max_parallel": max_parallel, "seed": seed,
                   "pruning": pruning, "model_name": model_name}
        return await self._call(_Sweeps.submit(search_space, dataset_id, x, y, options,
                                               {**(job or {}), **spec}))

    async def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        return await self._call(_Req("GET", f"/v1/sweeps/{sweep_id}"))

    async def sweeps(self, status: str | None = None, limit: int = 50
                     ) -> list[dict[str, Any]]:
        return (await self._call(_Sweeps.list(status, limit)))["data"]

    async def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        return await self._call(_Req("POST", f"/v1/sweeps/{sweep_id}/cancel"))

    async def sweep_plot(self, sweep_id: str) -> bytes:
        return await self._call(_Req("GET", f"/v1/sweeps/{sweep_id}/plot.png", raw=True))

    async def sweep_events(self, sweep_id: str, last_event_id: str | None = None, *,
                           reconnects: int = 5) -> AsyncIterator[Event]:
        async for event in self._stream(f"/v1/sweeps/{sweep_id}/events", f"sweep {sweep_id}",
                                        last_event_id, reconnects):
            yield event

    async def wait_sweep(self, sweep_id: str, on_event: Progress | None = None
                         ) -> dict[str, Any]:
        async for event in self.sweep_events(sweep_id):
            if event.event == "end":
                return event.data
            if on_event is not None:
                on_event({"event": event.event, **event.data})
        return await self.get_sweep(sweep_id)

    async def sweep(self, search_space: dict[str, Any], *, on_event: Progress | None = None,
                    **options: Any) -> dict[str, Any]:
        sweep = await self.submit_sweep(search_space, **options)
        return _sweep_ended(await self.wait_sweep(sweep["id"], on_event))

    # ------------------------------------------------------------ batch predictions

    async def submit_prediction(self, model: str, dataset_id: str, *, format: str = "csv",
                                include_input: bool = False,
                                idempotency_key: str | None = None) -> dict[str, Any]:
        return await self._call(_Predictions.submit(model, dataset_id, format, include_input,
                                                    idempotency_key))

    async def prediction(self, prediction_id: str, wait: float = 0) -> dict[str, Any]:
        return await self._call(_Predictions.get(prediction_id, wait))

    async def predictions(self, status: str | None = None, limit: int = 50
                          ) -> list[dict[str, Any]]:
        return (await self._call(_Predictions.list(status, limit)))["data"]

    async def cancel_prediction(self, prediction_id: str) -> dict[str, Any]:
        return await self._call(_Req("POST", f"/v1/predictions/{prediction_id}/cancel"))

    async def delete_prediction(self, prediction_id: str) -> None:
        await self._call(_Req("DELETE", f"/v1/predictions/{prediction_id}"))

    async def prediction_result(self, prediction_id: str) -> bytes:
        return await self._call(_Predictions.result(prediction_id))

    async def batch_predict(self, model: str, dataset_id: str, *, format: str = "csv",
                            include_input: bool = False, on_progress: Progress | None = None,
                            idempotency_key: str | None = None) -> dict[str, Any]:
        p = await self.submit_prediction(model, dataset_id, format=format,
                                         include_input=include_input,
                                         idempotency_key=idempotency_key)
        async for event in self._stream(f"/v1/predictions/{p['id']}/events",
                                        f"prediction {p['id']}", None, 5):
            if event.event == "progress" and on_progress is not None:
                on_progress(event.data)
            elif event.event == "end":
                p = event.data
        if p["status"] not in _ENDED:
            p = await self.prediction(p["id"])
        return _prediction_ended(p)
