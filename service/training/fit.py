"""Training: ``fit(spec, x, y, device, on_progress, should_stop) -> FitResult``.

No FastAPI here, no database: the worker feeds it arrays and callbacks. The steps: split the
rows, standardize (optional), turn targets into class indices for classifiers, build the
registered model from the seed, apply its parameter-free ``transform`` to the data once,
then train its ``head`` with the fastest exact engine:

engines.py says which: the closed form, the fused SGD step, or the autograd loop.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from models import get_kind
from models.registry import ModelKind
from service.errors import Diverged, InvalidTargets, Overflow, TrainingError
from service.training import closed_form
from service.training.engines import pick_engine
from service.training.epoch_loop import (
    DIVERGED_HINT,
    HeadFn,
    LoopResult,
    ProgressFn,
    StopFn,
    make_optimizer,
    make_scheduler,
    run_loop,
)
from service.training.reported import reported_linear
from service.training.scaling import Scaling, served
from service.training.spec import TrainingSpec
from service.training.targets import class_indices

__all__ = ["DIVERGED_HINT", "FitResult", "InitialState", "class_indices", "fit", "make_loss",
           "make_optimizer", "make_scheduler", "split_rows"]

log = logging.getLogger(__name__)
_PREDICT_ROWS = 1 << 16  # rows per forward pass when measuring the final model


@dataclass
class FitResult:
    kind: str
    config: dict[str, Any]  # the model's config dataclass, as the checkpoint stores it
    state: dict[str, np.ndarray]  # the module's state_dict (float32), as trained
    weight: np.ndarray | None  # (out, in) of the linear layer; original units (see ModelPublic)
    bias: np.ndarray | None  # (out,)
    normalization: dict[str, list[float] | None] | None
    epochs: np.ndarray  # int32, the logged epoch numbers (1-based)
    loss: np.ndarray  # float32, training loss at each logged epoch, before that epoch's step
    val_loss: np.ndarray | None
    train_loss: float  # loss of the final model on the training rows, in original units
    final_val_loss: float | None
    r2: float | None
    lstsq_loss: float | None
    engine: str
    device: str
    accuracy: float | None = None
    val_accuracy: float | None = None
    log_loss: float | None = None
    stopped: dict[str, Any] | None = None
    trace: dict[str, Any] | None = None


@dataclass(frozen=True)
class InitialState:
    """Where a warm start begins: a fitted model's tensors (state_dict names, float32, in
    the units it trained in) and its normalization, which the new run keeps as it was."""

    state: dict[str, np.ndarray]
    normalization: dict[str, list[float] | None] | None


def make_loss(spec: TrainingSpec) -> nn.Module:
    name = spec.resolved_loss()
    if name == "mse":
        return nn.MSELoss()
    if name == "l1":
        return nn.L1Loss()
    if name == "huber":
        return nn.HuberLoss(delta=spec.huber_delta)
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss()


def split_rows(
    n: int, fraction: float, seed: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Train and validation row indices (None, None: all rows train, nothing is copied);
    the split is drawn from the seed, on the CPU."""
    if fraction <= 0:
        return None, None
    n_val = max(1, int(round(n * fraction)))
    if n - n_val < 1:
        raise TrainingError(
            f"validation_fraction {fraction} leaves no training rows out of {n}"
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).numpy()
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _column_stats(a: np.ndarray, center: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per column. Without ``center`` (a model without bias)
    the mean is 0 and the scale the root mean square: centring would give the model the
    intercept it was asked not to have."""
    if not center:
        rms = np.sqrt(np.mean(np.square(a, dtype=np.float64), axis=0))
        return np.zeros(a.shape[1]), np.where(rms > 0, rms, 1.0)
    mean = a.mean(axis=0, dtype=np.float64)
    std = a.std(axis=0, dtype=np.float64)
    return mean, np.where(std > 0, std, 1.0)  # a constant column is centred, not scaled


def _scale(a: np.ndarray | None, mean: np.ndarray, std: np.ndarray) -> np.ndarray | None:
    return None if a is None else ((a - mean) / std).astype(np.float32)


def model_config(spec: TrainingSpec, in_features: int, out_features: int,
                 classes: int | None) -> Any:
    kind = get_kind(spec.model.kind)
    values = spec.model.model_dump(exclude={"kind"})
    values.update(in_features=in_features, out_features=out_features)
    if classes is not None:
        values["classes"] = classes
    return kind.make_config(**values)


def fit(
    spec: TrainingSpec,
    x: np.ndarray,
    y: np.ndarray,
    device: str = "cpu",
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    trace_rows: int = 20,
    init: InitialState | None = None,
) -> FitResult:
    """Train ``spec.model`` on rows ``x`` -> ``y``. Raises Diverged, Cancelled, TrainingError.
    ``init``: start from these weights and this normalization (a warm start), not the seed's;
    the seed still draws the validation split and the mini-batches."""
    kind = get_kind(spec.model.kind)
    loss_name = spec.resolved_loss()
    seed = spec.seed if spec.seed is not None else 0
    train_idx, val_idx = split_rows(x.shape[0], spec.validation_fraction, seed)
    x_train, y_train = (x, y) if train_idx is None else (x[train_idx], y[train_idx])
    x_val = x[val_idx] if val_idx is not None else None
    y_val = y[val_idx] if val_idx is not None else None
    orig = (x_train, y_train, x_val, y_val)

    classes = None
    if kind.task == "classification":
        try:
            labels, classes = class_indices(y, getattr(spec.model, "classes", None))
        except ValueError as e:
            raise InvalidTargets(f"the targets do not fit a classifier: {e}") from None
        if loss_name == "bce" and classes != 2:
            raise TrainingError(f"bce trains two classes; the targets have {classes}")
        y_train = labels if train_idx is None else labels[train_idx]
        y_val = labels[val_idx] if val_idx is not None else None
        if loss_name == "bce":  # one logit: the target is P(class 1)
            y_train = y_train.astype(np.float32)[:, None]
            y_val = None if y_val is None else y_val.astype(np.float32)[:, None]
    out_features = (1 if loss_name == "bce" else classes) if classes is not None else y.shape[1]

    norm = None
    if init is not None and init.normalization is not None:  # kept as the parent had it
        norm = dict(init.normalization)
        mx, sx = np.asarray(norm["x_mean"]), np.asarray(norm["x_std"])
        x_train, x_val = _scale(x_train, mx, sx), _scale(x_val, mx, sx)
        if kind.task == "regression" and norm.get("y_mean") is not None:
            my, sy = np.asarray(norm["y_mean"]), np.asarray(norm["y_std"])
            y_train, y_val = _scale(y_train, my, sy), _scale(y_val, my, sy)
    elif spec.standardize:
        mx, sx = _column_stats(x_train, spec.model.bias)
        x_train, x_val = _scale(x_train, mx, sx), _scale(x_val, mx, sx)
        norm = {"x_mean": mx.tolist(), "x_std": sx.tolist(), "y_mean": None, "y_std": None}
        if kind.task == "regression":
            my, sy = _column_stats(y_train, spec.model.bias)
            y_train, y_val = _scale(y_train, my, sy), _scale(y_val, my, sy)
            norm.update(y_mean=my.tolist(), y_std=sy.tolist())

    config = model_config(spec, x.shape[1], out_features, classes)
    # the initial weights are ``torch.manual_seed(seed); Model(config)``'s, on the CPU: the
    # CPU generator is the one nn.Linear draws from; torch.manual_seed would also seed every
    # accelerator backend lazily, formatting a stack trace for each (0.5 ms a job)
    torch.random.default_generator.manual_seed(seed)
    model = kind.module_cls(config)
    if init is not None:  # every engine, the closed form too, starts from the model's weights
        _load_state(model, init.state)
    if kind.transforms_inputs:  # once, on the CPU: the loop then trains the head alone
        with torch.no_grad():
            x_train = model.transform(torch.as_tensor(x_train)).numpy()
            if x_val is not None:
                x_val = model.transform(torch.as_tensor(x_val)).numpy()
        for part in (x_train, x_val):
            if part is not None and not np.isfinite(part).all():
                raise Overflow(f"the {spec.model.kind} model's expanded inputs overflow "
                               "float32; standardize the inputs or lower the degree")

    run = _train(spec, kind, model, x_train, y_train, x_val, y_val, device, seed,
                 on_progress, should_stop, trace_rows)
    return _result(spec, kind, model, config, norm, run, orig, classes, device)


def _load_state(model: nn.Module, state: dict[str, np.ndarray]) -> None:
    """The warm start's tensors into the module, strictly by name and shape."""
    try:
        model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32))
                               for k, v in state.items()})
    except (RuntimeError, KeyError) as e:  # submit checked the configs: a changed file
        raise TrainingError("the model to start from does not fit this job's model: "
                            f"{str(e).splitlines()[0][:200]}") from None


@dataclass
class _Run:
    loop: LoopResult
    engine: str
    device: str
    stats: closed_form.Stats | None = None
    val_stats: closed_form.Stats | None = None


def _train(spec: TrainingSpec, kind: ModelKind, model: nn.Module, x_train: np.ndarray,
           y_train: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
           device: str, seed: int, on_progress: ProgressFn | None, should_stop: StopFn | None,
           trace_rows: int) -> _Run:
    engine = pick_engine(spec, x_train.shape[0])
    if engine == "closed_form":
        stats_device = "cpu" if device == "mps" else device  # MPS has no float64
        bias = spec.model.bias
        try:
            stats = closed_form.sufficient_stats(x_train, y_train, bias, stats_device)
            val_stats = (closed_form.sufficient_stats(x_val, y_val, bias, stats_device)
                         if x_val is not None and y_val is not None else None)
            loop = _closed_form(spec, model, stats, val_stats, should_stop)
            return _Run(loop, "closed_form", stats_device, stats, val_stats)
        except (closed_form.Unstable, np.linalg.LinAlgError) as e:
            # the loop then fails (or not) at the very epoch a plain loop would
            log.info("closed form declined (%s); running the loop", e)
            engine = "fused"  # what the closed form can run, the fused step runs too
    fused = engine == "fused"
    loop = run_loop(spec, model, make_loss(spec), x_train, y_train, x_val, y_val, device, seed,
                    on_progress, should_stop, fused=fused, trace_rows=trace_rows)
    return _Run(loop, "fused" if fused else "autograd", device)


def logged_epochs(spec: TrainingSpec) -> np.ndarray:
    """1-based epochs whose loss is kept: every ``log_every``-th, and the last."""
    numbers = np.arange(1, spec.epochs + 1, dtype=np.int64)
    return numbers[(numbers % spec.log_every == 0) | (numbers == spec.epochs)]


def _closed_form(
    spec: TrainingSpec,
    model: nn.Module,
    stats: closed_form.Stats,
    val_stats: closed_form.Stats | None,
    should_stop: StopFn | None,
) -> LoopResult:
    """Every epoch of full-batch SGD in closed form; the final weights go into the model."""
    linear = cast(nn.Linear, model.linear)  # the closed form runs only a linear_head kind
    w0 = linear.weight.detach().double().numpy()  # (k, d)
    d = w0.shape[1]
    theta0 = w0.T
    if spec.model.bias:
        theta0 = np.vstack([theta0, linear.bias.detach().double().numpy()[None, :]])
    epochs = logged_epochs(spec)
    theta, losses, val_losses = closed_form.trajectory(
        spec, theta0, stats, val_stats, epochs, should_stop
    )
    if not np.isfinite(losses).all():
        raise closed_form.Unstable("non-finite loss in the closed form")
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(theta[:d].T.astype(np.float32)))
        if spec.model.bias:
            linear.bias.copy_(torch.from_numpy(theta[d].astype(np.float32)))
    return LoopResult(epochs.astype(np.int32), losses.astype(np.float32),
                      None if val_losses is None else val_losses.astype(np.float32))


def _forward(model: nn.Module, x: np.ndarray, transformed: bool) -> np.ndarray:
    """The model's output on rows of x, on the CPU, in blocks."""
    fn = cast(HeadFn, model.head) if transformed else model
    with torch.no_grad():
        return np.concatenate([
            fn(torch.as_tensor(x[s : s + _PREDICT_ROWS])).numpy()
            for s in range(0, max(len(x), 1), _PREDICT_ROWS)
        ]) if len(x) else np.zeros((0, 0), np.float32)


def _result(spec: TrainingSpec, kind: ModelKind, model: nn.Module, config: Any,
            norm: dict[str, Any] | None, run: _Run,
            orig: tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None],
            classes: int | None, device: str) -> FitResult:
    """The trained model's tensors and its final metrics, on the CPU, in the original units."""
    model.to("cpu")
    state = {k: v.detach().cpu().numpy().astype(np.float32, copy=True)
             for k, v in model.state_dict().items()}
    if not all(np.isfinite(v).all() for v in state.values()):
        raise Diverged("the weights are not finite after training", hint=DIVERGED_HINT)
    weight, bias = reported_linear(kind, state, dataclasses.asdict(config), norm)
    x_train, y_train, x_val, y_val = orig
    res = FitResult(
        kind=kind.name, config=dataclasses.asdict(config), state=state, weight=weight,
        bias=bias, normalization=norm, epochs=run.loop.epochs, loss=run.loop.loss,
        val_loss=run.loop.val_loss, train_loss=0.0, final_val_loss=None, r2=None,
        lstsq_loss=None, engine=run.engine, device=run.device, stopped=run.loop.stopped,
        trace=run.loop.trace,
    )
    scaling = Scaling.from_normalization(norm)

    def predict(x: np.ndarray) -> np.ndarray:  # what predict serves (float32)
        return served(x, lambda z: _forward(model, z, transformed=False), scaling)

    if kind.task == "classification":
        res.train_loss, res.accuracy = _classify_metrics(predict(x_train), y_train, classes)
        res.log_loss = res.train_loss
        if x_val is not None and y_val is not None:
            res.final_val_loss, res.val_accuracy = _classify_metrics(predict(x_val), y_val,
                                                                     classes)
        return res
    crit = make_loss(spec)
    squared = spec.resolved_loss() == "mse"
    if squared and kind.name == "linear":
        stats = run.stats if norm is None else None
        if stats is None:
            stats = closed_form.sufficient_stats(x_train, y_train, spec.model.bias)
        res.lstsq_loss = stats.loss_ls
    if run.stats is not None and norm is None and kind.name == "linear":
        # the rows need not be read again: squared loss and R^2 follow from the statistics
        assert weight is not None  # the linear kind has a linear head, so it is reported
        theta = weight.T.astype(np.float64)
        if bias is not None:
            theta = np.vstack([theta, bias.astype(np.float64)[None, :]])
        res.train_loss, res.r2 = run.stats.mse(theta), run.stats.r2(theta)
        res.final_val_loss = run.val_stats.mse(theta) if run.val_stats is not None else None
        return res

    def loss_on(xs: np.ndarray, ys: np.ndarray) -> tuple[float, np.ndarray]:
        pred = predict(xs)
        with torch.no_grad():
            value = crit(torch.from_numpy(pred), torch.from_numpy(np.asarray(ys))).item()
        return float(value), pred

    res.train_loss, pred = loss_on(x_train, y_train)
    res.r2 = r2_score(pred, y_train)
    if x_val is not None and y_val is not None:
        res.final_val_loss = loss_on(x_val, y_val)[0]
    return res


def _classify_metrics(logits: np.ndarray, y: np.ndarray, classes: int | None
                      ) -> tuple[float, float]:
    """(log loss, accuracy) of logits against the rows' class indices, in float64."""
    labels, _ = class_indices(y, classes)
    z = torch.from_numpy(logits.astype(np.float64))
    logp = (torch.nn.functional.logsigmoid(torch.cat([-z, z], 1)) if z.shape[1] == 1
            else torch.log_softmax(z, 1))
    nll = -logp[torch.arange(len(labels)), torch.from_numpy(labels)]
    accuracy = float((logp.argmax(1).numpy() == labels).mean()) if len(labels) else 0.0
    return float(nll.mean()), accuracy


def r2_score(pred: np.ndarray, y: np.ndarray) -> float | None:
    """Mean over targets of 1 - SS_res / SS_tot (None when a target is constant)."""
    pred = pred.astype(np.float64)
    y = y.astype(np.float64)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    if (ss_tot == 0).any():
        return None
    ss_res = ((y - pred) ** 2).sum(axis=0)
    return float(np.mean(1 - ss_res / ss_tot))
