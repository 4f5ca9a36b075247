"""A sweep's trials claimed and trained as batches by one worker.

Two kinds of batch (see ``claim_trials``): the closed form's trials, computed together from
one pass of the sufficient statistics and one eigendecomposition, and the loop's trials of
one model shape, trained as one tensor program (training/batched.py). Each trial is still
its own job, with its own history, model, checkpoint and metrics as it would have alone. A
loop trial is prepared and ended by ``run_job`` (its data, its split and initial weights,
its metrics, checkpoint and model); only the epochs in between run in the batch; the
trials' progress and heartbeats are written in one transaction per interval, and a trial
cancelled meanwhile (a pruned one) leaves the batch at the next chunk. A closed-form batch
runs its first trial through ``run_job`` and derives every other trial's end from it
(``_Template``, checked against ``run_job``'s own record), then ends together
(``run_closed_form``): its checkpoints made durable with one sync, its trials' ends
recorded in one transaction.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, cast

import numpy as np
from sqlalchemy import select

from service.faults import pause_at
from service.store.artifacts import ArtifactStore
from service.store.jobs import PREDICT
from service.store.metadata import MetadataStore
from service.store.sweeps import SweepRecords
from service.store.tables import DatasetRow, JobRow, ModelRow, new_id
from service.store.tabular import Table
from service.training import batched, closed_form
from service.training.epoch_loop import LoopCall
from service.training.fit import logged_epochs
from service.training.spec import TrainingSpec
from service.worker.runner import Notify, history_values, run_job

log = logging.getLogger(__name__)

MAX_BATCH = 64
"""Most trials one worker claims as one batch (the rest stay for the other workers)."""


class ReadOnce:
    """The artifact store, each dataset read once for the whole batch (one array, so the
    statistics' pass over it is shared too)."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        self._artifacts = artifacts
        self._datasets: dict[str, tuple[np.ndarray, np.ndarray] | Table] = {}

    def load_dataset(self, sha: str) -> tuple[np.ndarray, np.ndarray] | Table:
        if sha not in self._datasets:
            self._datasets[sha] = self._artifacts.load_dataset(sha)
        return self._datasets[sha]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._artifacts, name)



def trial_key(spec: TrainingSpec) -> str | None:
    """Trials with equal keys train together (None: alone)."""
    key = closed_form.batch_key(spec)
    return f"closed_form:{key}" if key is not None else batched.batch_key(spec)


_CLOSED_FORM_KEYS: dict[str, str] = {}
"""Closed-form trials' keys by their stored spec without the fields the key leaves out (a
sweep's trials share one): each sibling a claim looks at is not validated again."""


def _shared_part(spec: dict[str, Any]) -> dict[str, Any] | None:
    """A stored spec without the fields the closed form's key leaves out (None: not a
    spec of that shape). Two specs with equal parts have equal closed-form keys: the key
    is made of the others, and whether a spec has one depends on the others alone."""
    optimizer = spec.get("optimizer")
    if not isinstance(optimizer, dict):
        return None
    shared = {k: v for k, v in spec.items() if k not in closed_form.BATCHED_FIELDS}
    shared["optimizer"] = {k: v for k, v in optimizer.items()
                           if k not in closed_form.BATCHED_OPTIMIZER}
    return shared


def _key_of(spec: dict[str, Any]) -> str | None:
    """``trial_key`` of a stored (validated, dumped) spec."""
    shared = _shared_part(spec)
    name = None if shared is None else json.dumps(shared, sort_keys=True)
    if name is not None and name in _CLOSED_FORM_KEYS:
        return _CLOSED_FORM_KEYS[name]
    key = trial_key(TrainingSpec.model_validate(spec))
    # a loop trial's key (it keeps some of those fields) is not kept
    if name is not None and key is not None and key.startswith("closed_form:"):
        if len(_CLOSED_FORM_KEYS) >= 256:
            _CLOSED_FORM_KEYS.clear()
        _CLOSED_FORM_KEYS[name] = key
    return key


def claim_trials(meta: MetadataStore, job: JobRow, worker: str, parts: int = 1
                 ) -> list[JobRow]:
    """``job`` (claimed) and the queued trials of its sweep that train with it as one batch
    (``trial_key``: the same dataset and device too): this worker's share of the sweep's
    open trials (and of those its controller is about to queue) when ``parts`` workers
    share them, at most ``MAX_BATCH``. One read of the sweep's trials, then one UPDATE that
    claims the oldest of those still queued, up to the share: workers that claim at the
    same moment count each other's trials as still queued, ask for the same share, and
    each gets it (the second claim passes over what the first took)."""
    if job.task == PREDICT:  # a batch prediction is no sweep's trial
        return [job]
    key = _key_of(job.spec)
    if key is None:
        return [job]
    # a closed-form trial's siblings of the same key are those of the same shared part
    mine = _shared_part(job.spec) if key.startswith("closed_form:") else None

    def same_key(spec: dict[str, Any]) -> bool:
        return (mine is not None and _shared_part(spec) == mine) or _key_of(spec) == key

    queued, running, to_come = SweepRecords(meta).trial_siblings(job.id, 4 * MAX_BATCH)
    same = [job_id for job_id, dataset_id, device, spec in queued
            if dataset_id == job.dataset_id and device == job.device and same_key(spec)]
    # the trials its controller is about to queue count too (it queues them in parts, one
    # per worker): they are the other workers' share
    share = (MAX_BATCH if parts <= 1 else
             min(MAX_BATCH, -(-(len(same) + 1 + running + to_come) // parts)))
    return [job, *meta.claim_batch(same, worker, most=share - 1)] if same else [job]


def run_trials(jobs: list[JobRow], worker: str, meta: MetadataStore,
               artifacts: ArtifactStore, progress_interval: float = 0.2,
               notify: Notify | None = None) -> list[str]:
    """Train claimed trials (``claim_trials``) together; returns their final statuses."""
    if len(jobs) > 1 and closed_form.batch_key(TrainingSpec.model_validate(jobs[0].spec)):
        return run_closed_form(jobs, worker, meta, artifacts, progress_interval, notify)
    shared = cast(ArtifactStore, ReadOnce(artifacts))
    statuses: dict[str, str] = {}
    taken: list[tuple[JobRow, LoopCall]] = []
    for job in jobs:  # each prepared as run_job prepares it, up to its epochs
        with batched.collecting() as box:
            try:
                statuses[job.id] = run_job(job, worker, meta, shared, progress_interval,
                                           notify)  # ended before its loop: alone
            except batched.Collected:
                assert box.call is not None
                taken.append((job, box.call))
    groups = batched.chunked([call for _, call in taken])
    for g, group in enumerate(groups):
        members = [taken[i] for i in group]
        waiting = [job.id for later in groups[g + 1:] for job, _ in (taken[i] for i in later)]
        statuses.update(_train_group(members, waiting, worker, meta, shared,
                                     progress_interval, notify))
    return [statuses[j.id] for j in jobs]


def _train_group(members: list[tuple[JobRow, LoopCall]], waiting: list[str], worker: str,
                 meta: MetadataStore, artifacts: ArtifactStore, progress_interval: float,
                 notify: Notify | None) -> dict[str, str]:
    jobs = [job for job, _ in members]
    statuses: dict[str, str] = {}
    if len(members) == 1:
        statuses[jobs[0].id] = run_job(jobs[0], worker, meta, artifacts, progress_interval,
                                       notify)
        return statuses
    records = SweepRecords(meta)
    last = [0.0]

    def watch(progress: list[batched.Progress]) -> set[int]:
        now = time.monotonic()
        if now - last[0] < progress_interval:
            return set()
        last[0] = now
        stop = records.batch_progress(
            worker, [(jobs[i].id, epoch, loss, val) for i, epoch, loss, val in progress],
            waiting)
        return {i for i, *_ in progress if jobs[i].id in stop}

    def on_end(i: int, end: batched.TrialEnd) -> None:  # the trial ends as it would alone
        with batched.replaying(end):
            statuses[jobs[i].id] = run_job(jobs[i], worker, meta, artifacts,
                                           progress_interval, notify)

    try:
        batched.train_together([call for _, call in members], watch, on_end)
    except Exception:  # never a batch's failure: the trials not ended yet run alone
        log.exception("a batch of %d trials failed; its trials run alone", len(jobs))
        for job in jobs:
            if job.id not in statuses:
                statuses[job.id] = run_job(job, worker, meta, artifacts, progress_interval,
                                           notify)
    log.info("worker %s trained %d trials as one batch", worker, len(jobs))
    return statuses


# ---------------------------------------------------------------- the closed form's batch


class _EndsTogether:
    """The metadata store as ``run_job`` sees it in a closed-form batch: each trial's end
    (its model and job values, or its failure) is held, not written, and ``commit`` writes
    them all in one transaction (``SweepRecords.finish_batch``); the dataset's record is
    read once, and whether a trial was cancelled is asked once for the whole batch (at most
    every ``interval``). Everything else goes to the store."""

    def __init__(self, meta: MetadataStore, jobs: list[JobRow], interval: float) -> None:
        self._meta = meta
        self._ids = [j.id for j in jobs]
        self._interval = interval
        self._asked = -math.inf
        self._cancelled: set[str] = set()
        self._datasets: dict[tuple[str, str], DatasetRow] = {}
        self.ends: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = []

    def get_dataset(self, dataset_id: str, tenant: str = "default") -> DatasetRow:
        key = (dataset_id, tenant)
        if key not in self._datasets:
            self._datasets[key] = self._meta.get_dataset(dataset_id, tenant=tenant)
        return self._datasets[key]

    def cancel_requested(self, job_id: str) -> bool:
        now = time.monotonic()
        if now - self._asked >= self._interval:
            self._asked = now
            with self._meta.session() as s:
                self._cancelled = set(s.scalars(select(JobRow.id).where(
                    JobRow.id.in_(self._ids), JobRow.cancel_requested.is_(True))))
        return job_id in self._cancelled

    def finish_with_model(self, job_id: str, worker: str, model: dict[str, Any],
                          job_values: dict[str, Any]) -> ModelRow:
        self.ends.append((job_id, model, job_values))
        return ModelRow(id=model["id"])  # what run_job reads of it: its id

    def finish_job(self, job_id: str, worker: str, **values: Any) -> bool:
        self.ends.append((job_id, None, values))
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._meta, name)


def run_closed_form(jobs: list[JobRow], worker: str, meta: MetadataStore,
                    artifacts: ArtifactStore, progress_interval: float = 0.2,
                    notify: Notify | None = None) -> list[str]:
    """Closed-form trials claimed together: the data read once, one pass of the sufficient
    statistics and one eigendecomposition for the batch, every trial's trajectory computed
    together (``_train_closed_form``); then the batch finishes together: every checkpoint
    written and made durable with one sync (``checkpoints_together``), then every trial's
    end recorded in one transaction (with its trial's row, and its sweep's end when these
    were its last trials: ``SweepRecords.finish_batch``). A crash before that commit leaves
    no trial ended
    (their files are orphans the data directory's sweep removes); one after it, every trial
    ended with its file durable. Returns the trials' final statuses."""
    ends = _EndsTogether(meta, jobs, progress_interval)
    events: list[dict[str, Any]] = []
    with artifacts.checkpoints_together():
        statuses = _train_closed_form(jobs, worker, ends, artifacts, progress_interval,
                                      events.append if notify else None)
    models = {job_id: model["id"] for job_id, model, _ in ends.ends if model is not None}
    if notify and models:  # before and after the commit: see serving/predictor.py
        notify({"event": "model_committing", "job_id": jobs[0].id,
                "model_id": next(iter(models.values()))})
    for job in jobs:
        pause_at("batch_commit", job.id)
    try:
        end = SweepRecords(meta).finish_batch(worker, ends.ends)
    except BaseException:  # not recorded: the files would point nowhere
        for model_id in models.values():
            artifacts.delete_checkpoint(model_id)
        raise
    held = end.held
    lost = [job.id for job in jobs if job.id not in held]
    for job_id in lost:  # taken from us (cancelled or recovered): no orphan file
        if job_id in models:
            artifacts.delete_checkpoint(models[job_id])
        log.warning("job %s was no longer held by %s; its end discarded", job_id, worker)
    out = {job.id: status for job, status in zip(jobs, statuses, strict=True)}
    for job_id in lost:
        out[job_id] = meta.get_job(job_id, tenant=None).status
    if notify:
        for ended in end.sweeps_ended:  # first: its long polls answer now
            notify({"event": "sweep_finished", **ended})
        for event in events:
            if event["event"] != "model_committing" and event["job_id"] in held:
                # settled: its trial recorded, nothing for the sweep's controller to do
                notify({**event, "settled": True} if event["job_id"] in end.settled
                       else event)
    return [out[job.id] for job in jobs]


def _train_closed_form(jobs: list[JobRow], worker: str, ends: _EndsTogether,
                       artifacts: ArtifactStore, progress_interval: float,
                       notify: Notify | None) -> list[str]:
    """Each trial's end held in ``ends``. The first trials run through ``run_job`` as alone
    (inside ``trials_together``: the statistics, the eigendecomposition and every trial's
    trajectory are computed at the first one's fit) until one succeeds through the closed
    form: it is the template (``_Template``) from which every other trial's model, history
    and checkpoint follow without a fit of its own, as ``run_job`` would record them; a
    trial that does not follow (its recurrence grows, its weights overflow, it was
    cancelled, its file could not be written) runs through ``run_job`` too."""
    written = _Written(artifacts)
    store = cast(MetadataStore, ends)
    shared = cast(ArtifactStore, written)
    specs = [TrainingSpec.model_validate(j.spec) for j in jobs]
    statuses: dict[str, str] = {}
    template: _Template | None = None
    tries = 0
    with closed_form.trials_together(specs) as trials:
        for job, spec in zip(jobs, specs, strict=True):
            if template is not None and not ends.cancel_requested(job.id):
                got = template.end(job, spec)
                if got is not None and _record(job, worker, ends, written, got, notify):
                    statuses[job.id] = "succeeded"
                    continue
            statuses[job.id] = run_job(job, worker, store, shared, progress_interval, notify)
            if template is None and statuses[job.id] == "succeeded" and tries < 3:
                tries += 1
                template = _Template.of(job, spec, ends, written, trials)
    return [statuses[j.id] for j in jobs]


class _Written:
    """The artifact store as ``run_job`` sees it in a closed-form batch: each dataset read
    once (``ReadOnce``), the last checkpoint written and the traces written
    remembered (the template's checkpoint; a trial with a trace is no template)."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        self._artifacts = ReadOnce(artifacts)
        self.last: tuple[str, dict[str, np.ndarray], dict[str, str]] | None = None
        self.traces: set[str] = set()

    def put_checkpoint(self, model_id: str, tensors: dict[str, np.ndarray],
                       metadata: dict[str, str]) -> tuple[str, str]:
        self.last = (model_id, tensors, metadata)
        return cast(ArtifactStore, self._artifacts).put_checkpoint(model_id, tensors, metadata)

    def put_trace(self, job_id: str, blob: bytes) -> None:
        self.traces.add(job_id)
        cast(ArtifactStore, self._artifacts).put_trace(job_id, blob)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._artifacts, name)


_End = tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray], dict[str, str]]
"""A trial's end as ``run_job`` records it: its model (without id, file and sha256), its
job's values, its checkpoint's tensors and metadata."""

# what run_job records of a closed-form trial, as the template knows it: a field it does
# not know (run_job or fit changed) turns the template off, and every trial runs alone
_MODEL_FIELDS = {"id", "tenant", "name", "job_id", "dataset_id", "kind", "config",
                 "in_features", "out_features", "weight", "bias", "normalization",
                 "feature_names", "target_names", "metrics", "spec", "device", "checkpoint",
                 "sha256", "parent_id"}
_METRICS = {"train_loss", "val_loss", "r2", "lstsq_loss", "accuracy", "val_accuracy",
            "log_loss"}
_JOB_VALUES = {"history_epoch", "history_loss", "history_val_loss", "device_used",
               "engine_used", "progress_epoch", "stopped_early", "progress_loss",
               "progress_val_loss"}
_METADATA = {"format", "kind", "config", "feature_names", "target_names", "normalization",
             "job_id", "dataset_sha256"}


class _Template:
    """A trial of a closed-form batch that ``run_job`` ran as alone: a linear model fitted
    on the raw matrix (no standardization, no pipeline), by the closed form. The batch's
    other trials share everything with it but the SGD step's settings and the epochs
    (``closed_form.batch_key``): the same rows, split, initial weights and statistics. So
    each one's end is the template's with what those settings change: the trajectory (its
    history and final weights, from the batch's arrays) and what follows from the weights
    (fit.py's ``_result`` on the statistics: the loss, R² and validation loss), checked
    once against the template itself (``of``)."""

    def __init__(self, model: dict[str, Any], values: dict[str, Any],
                 metadata: dict[str, str], bias: bool, trials: closed_form.Trials) -> None:
        self.model, self.values, self.metadata = model, values, metadata
        self.bias, self.trials = bias, trials
        self._epochs: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def of(cls, job: JobRow, spec: TrainingSpec, ends: _EndsTogether, written: _Written,
           trials: closed_form.Trials) -> _Template | None:
        """The trial ``run_job`` just ended as a template, or None when it cannot be one
        (then the batch's trials keep running through ``run_job``)."""
        if not ends.ends or written.last is None or trials.used is None:
            return None
        job_id, model, values = ends.ends[-1]
        model_id, tensors, metadata = written.last
        if (job_id != job.id or model is None or model["id"] != model_id
                or job.id in written.traces or model.get("kind") != "linear"
                or model.get("normalization") is not None
                or values.get("engine_used") != "closed_form" or set(model) != _MODEL_FIELDS
                or set(model["metrics"]) != _METRICS or set(values) != _JOB_VALUES
                or set(metadata) != _METADATA
                or set(tensors) not in ({"linear.weight"}, {"linear.weight", "linear.bias"})):
            return None
        template = cls(model, values, metadata, "linear.bias" in tensors, trials)
        got = template.end(job, spec)
        if got is None or not _same(got, (_unfiled(model), values, tensors, metadata)):
            log.warning("job %s: a closed-form trial's end does not follow from the batch's "
                        "arrays as run_job records it; the batch's trials run alone", job.id)
            return None
        return template

    def end(self, job: JobRow, spec: TrainingSpec) -> _End | None:
        """The trial's end, or None when it does not follow from the batch (it runs alone:
        its recurrence grows, or its weights are not finite)."""
        try:
            got = closed_form.batch_trajectory(self.trials, spec)
        except closed_form.Unstable:
            return None
        if got is None:
            return None
        theta, losses, val_losses = got
        epochs = self._logged(spec)
        if len(losses) != len(epochs) or not np.isfinite(losses).all():
            return None
        d = theta.shape[0] - int(self.bias)
        # fit.py's ``_closed_form`` puts the final weights in the float32 layer; its
        # ``_result`` reads them back as the state, and the metrics from the statistics
        state = {"linear.weight": np.ascontiguousarray(theta[:d].T, dtype=np.float32)}
        if self.bias:
            state["linear.bias"] = np.ascontiguousarray(theta[d], dtype=np.float32)
        if not all(np.isfinite(v).all() for v in state.values()):
            return None  # Diverged: said by the trial alone
        assert self.trials.used is not None
        _, train, val = self.trials.used
        weights = state["linear.weight"].T.astype(np.float64)
        if self.bias:
            weights = np.vstack([weights, state["linear.bias"].astype(np.float64)[None, :]])
        metrics = {**self.model["metrics"], "train_loss": train.mse(weights),
                   "r2": train.r2(weights),
                   "val_loss": val.mse(weights) if val is not None else None}
        loss = losses.astype(np.float32)
        val_loss = None if val_losses is None else val_losses.astype(np.float32)
        model = {**_unfiled(self.model), "name": job.model_name, "job_id": job.id,
                 "dataset_id": job.dataset_id,
                 "weight": state["linear.weight"].astype(float).tolist(),
                 "bias": (state["linear.bias"].astype(float).tolist() if self.bias
                          else None),
                 "metrics": metrics, "spec": job.spec}
        values = {**self.values, **history_values(epochs, loss, val_loss),
                  "progress_epoch": int(epochs[-1]) if len(epochs) else spec.epochs,
                  "progress_loss": float(loss[-1]) if len(loss) else None,
                  "progress_val_loss": (float(val_loss[-1]) if val_loss is not None
                                        and len(val_loss) else None)}
        return model, values, state, {**self.metadata, "job_id": job.id}

    def _logged(self, spec: TrainingSpec) -> np.ndarray:
        key = (spec.epochs, spec.log_every)
        if key not in self._epochs:
            self._epochs[key] = logged_epochs(spec).astype(np.int32)
        return self._epochs[key]


def _unfiled(model: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in model.items() if k not in ("id", "checkpoint", "sha256")}


def _same(a: Any, b: Any) -> bool:
    """Equal as recorded: dicts key by key, arrays by dtype, shape and bytes."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes())
    return type(a) is type(b) and bool(a == b)


def _record(job: JobRow, worker: str, ends: _EndsTogether, written: _Written, end: _End,
            notify: Notify | None) -> bool:
    """A trial's end that follows from the template, held as ``run_job`` holds one (its
    checkpoint written within the batch's block); False when its file could not be
    written (the trial then runs alone, which says why)."""
    model, values, tensors, metadata = end
    pause_at("claimed", job.id)
    model_id = new_id("mdl")
    try:
        path, sha = written.put_checkpoint(model_id, tensors, metadata)
    except OSError:
        return False
    pause_at("checkpoint", job.id)
    ends.finish_with_model(job.id, worker, {**model, "id": model_id, "checkpoint": path,
                                            "sha256": sha}, values)
    if notify:
        notify({"event": "model_created", "job_id": job.id, "model_id": model_id})
    log.info("job %s succeeded: model %s (closed_form, %s)", job.id, model_id,
             model["device"])
    return True
