"""Training: ``fit(spec, x, y, device, on_progress, should_stop) -> FitResult``.

No FastAPI here, no database: the worker feeds it arrays and callbacks. The plain path is
the seed program's loop (forward, loss, zero_grad, backward, step) run in chunks of epochs;
the losses stay on the device and leave it once a chunk, so the loop never syncs per epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from models import build_model
from service import closed_form
from service.errors import Cancelled, Diverged, TrainingError
from service.schemas import AdamSpec, RMSpropSpec, SGDSpec, TrainingSpec

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, float, float | None], None]
StopFn = Callable[[], bool]

_GATHER_ROWS = 1 << 16  # rows gathered at once for mini-batches
DIVERGED_HINT = "lower the learning rate or standardize the inputs (scale x to unit variance)"
_CHUNK_SECONDS = 0.1  # a chunk's length in time: bounds cancel latency and progress rate


@dataclass
class FitResult:
    weight: np.ndarray  # (out_features, in_features)
    bias: np.ndarray | None  # (out_features,)
    epochs: np.ndarray  # int32, the logged epoch numbers (1-based)
    loss: np.ndarray  # float32, training loss at each logged epoch, before that epoch's step
    val_loss: np.ndarray | None
    train_loss: float  # loss of the final weights on the training rows
    final_val_loss: float | None
    r2: float | None
    lstsq_loss: float | None
    engine: str
    device: str
    extra: dict[str, float] = field(default_factory=dict)


def make_loss(spec: TrainingSpec) -> nn.Module:
    if spec.loss == "mse":
        return nn.MSELoss()
    if spec.loss == "l1":
        return nn.L1Loss()
    return nn.HuberLoss(delta=spec.huber_delta)


def make_optimizer(spec: TrainingSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = spec.optimizer
    if isinstance(o, SGDSpec):
        return torch.optim.SGD(
            params,
            lr=o.lr,
            momentum=o.momentum,
            dampening=o.dampening,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
        )
    if isinstance(o, AdamSpec):
        cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        wd = o.weight_decay if o.weight_decay is not None else (0.01 if o.name == "adamw" else 0.0)
        return cls(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=wd, amsgrad=o.amsgrad)
    if isinstance(o, RMSpropSpec):
        return torch.optim.RMSprop(
            params,
            lr=o.lr,
            alpha=o.alpha,
            eps=o.eps,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            centered=o.centered,
        )
    raise TrainingError(f"unknown optimizer {o!r}")


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


def init_model(spec: TrainingSpec, in_features: int, out_features: int, seed: int) -> nn.Module:
    """The initial weights are ``torch.manual_seed(seed); nn.Linear(in, out)``'s, on the CPU."""
    # the CPU generator is the one nn.Linear draws from; torch.manual_seed would also seed
    # every accelerator backend lazily, formatting a stack trace for each (0.5 ms a job)
    torch.random.default_generator.manual_seed(seed)
    return build_model(
        spec.model.kind,
        in_features=in_features,
        out_features=out_features,
        bias=spec.model.bias,
    )


def r2_score(pred: np.ndarray, y: np.ndarray) -> float | None:
    """Mean over targets of 1 - SS_res / SS_tot (None when a target is constant)."""
    pred = pred.astype(np.float64)
    y = y.astype(np.float64)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    if (ss_tot == 0).any():
        return None
    ss_res = ((y - pred) ** 2).sum(axis=0)
    return float(np.mean(1 - ss_res / ss_tot))


def fit(
    spec: TrainingSpec,
    x: np.ndarray,
    y: np.ndarray,
    device: str = "cpu",
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> FitResult:
    """Train ``spec.model`` on rows ``x`` -> ``y``. Raises Diverged, Cancelled, TrainingError."""
    seed = spec.seed if spec.seed is not None else 0
    train_idx, val_idx = split_rows(x.shape[0], spec.validation_fraction, seed)
    x_train, y_train = (x, y) if train_idx is None else (x[train_idx], y[train_idx])
    x_val = x[val_idx] if val_idx is not None else None
    y_val = y[val_idx] if val_idx is not None else None

    model = init_model(spec, x.shape[1], y.shape[1], seed)
    stats = None
    why_not = closed_form.supports(spec, x_train.shape[0])
    if why_not is None:
        stats_device = "cpu" if device == "mps" else device  # MPS has no float64
        stats = closed_form.sufficient_stats(x_train, y_train, spec.model.bias, stats_device)
        val_stats = (
            closed_form.sufficient_stats(x_val, y_val, spec.model.bias, stats_device)
            if x_val is not None and y_val is not None else None
        )
        try:
            weight, bias, epochs_logged, losses, val_losses = _closed_form(
                spec, model, stats, val_stats, on_progress, should_stop
            )
            return finish(spec, weight, bias, x_train, y_train, x_val, y_val, epochs_logged,
                          losses, val_losses, "closed_form", stats_device, stats, val_stats)
        except closed_form.Unstable as e:
            log.info("closed form declined (%s); running the autograd loop", e)
    # mini-batch SGD on squared loss: the same step with the gradient written out
    fused = (
        spec.engine == "auto" and spec.model.kind == "linear" and spec.loss == "mse"
        and isinstance(spec.optimizer, SGDSpec)
    )
    epochs_logged, losses, val_losses = _loop(
        spec, model, x_train, y_train, x_val, y_val, device, seed, on_progress, should_stop,
        fused=fused,
    )

    weight = model.linear.weight.detach().cpu().numpy().copy()
    bias = model.linear.bias.detach().cpu().numpy().copy() if spec.model.bias else None
    return finish(spec, weight, bias, x_train, y_train, x_val, y_val, epochs_logged, losses,
                  val_losses, "fused" if fused else "autograd", device, stats)


def logged_epochs(spec: TrainingSpec) -> np.ndarray:
    """1-based epochs whose loss is kept: every ``log_every``-th, and the last."""
    numbers = np.arange(1, spec.epochs + 1, dtype=np.int64)
    return numbers[(numbers % spec.log_every == 0) | (numbers == spec.epochs)]


def _closed_form(
    spec: TrainingSpec,
    model: nn.Module,
    stats: closed_form.Stats,
    val_stats: closed_form.Stats | None,
    on_progress: ProgressFn | None,
    should_stop: StopFn | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray | None]:
    w0 = model.linear.weight.detach().double().numpy()  # (k, d)
    d = w0.shape[1]
    theta0 = w0.T
    if spec.model.bias:
        theta0 = np.vstack([theta0, model.linear.bias.detach().double().numpy()[None, :]])
    epochs = logged_epochs(spec)
    theta, losses, val_losses = closed_form.trajectory(
        spec, theta0, stats, val_stats, epochs, should_stop
    )
    if not np.isfinite(losses).all():
        raise closed_form.Unstable("non-finite loss in the closed form")
    weight = theta[:d].T.astype(np.float32)
    bias = theta[d].astype(np.float32) if spec.model.bias else None
    return (weight, bias, epochs.astype(np.int32), losses.astype(np.float32),
            None if val_losses is None else val_losses.astype(np.float32))


def finish(
    spec: TrainingSpec,
    weight: np.ndarray,
    bias: np.ndarray | None,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    epochs_logged: np.ndarray,
    losses: np.ndarray,
    val_losses: np.ndarray | None,
    engine: str,
    device: str,
    stats: closed_form.Stats | None = None,
    val_stats: closed_form.Stats | None = None,
) -> FitResult:
    """Final metrics of a trained linear model, computed on the CPU in float64."""
    if not (np.isfinite(weight).all() and (bias is None or np.isfinite(bias).all())):
        raise Diverged("the weights are not finite after training", hint=DIVERGED_HINT)
    crit = make_loss(spec)

    def loss_on(xs: np.ndarray, ys: np.ndarray) -> tuple[float, np.ndarray]:
        pred = xs @ weight.T + (bias if bias is not None else 0)  # (N, in) -> (N, out)
        with torch.no_grad():
            value = crit(torch.from_numpy(pred.astype(np.float32)), torch.from_numpy(ys)).item()
        return float(value), pred

    lstsq = r2 = None
    if spec.loss == "mse" and spec.model.kind == "linear":
        if stats is None:
            stats = closed_form.sufficient_stats(x_train, y_train, spec.model.bias)
        lstsq = stats.loss_ls
    if stats is not None and engine == "closed_form":
        # the rows need not be read again: squared loss and R^2 follow from the statistics
        theta = weight.T.astype(np.float64)
        if bias is not None:
            theta = np.vstack([theta, bias.astype(np.float64)[None, :]])
        train_loss, r2 = stats.mse(theta), stats.r2(theta)
        val_loss = val_stats.mse(theta) if val_stats is not None else None
    else:
        train_loss, pred = loss_on(x_train, y_train)
        r2 = r2_score(pred, y_train)
        val_loss = loss_on(x_val, y_val)[0] if x_val is not None and y_val is not None else None
    return FitResult(
        weight=weight,
        bias=bias,
        epochs=epochs_logged,
        loss=losses,
        val_loss=val_losses,
        train_loss=train_loss,
        final_val_loss=val_loss,
        r2=r2,
        lstsq_loss=lstsq,
        engine=engine,
        device=device,
    )


class _Logger:
    """Collects the chunks of losses that leave the device and checks them."""

    def __init__(self, spec: TrainingSpec) -> None:
        self.every = spec.log_every
        self.total = spec.epochs
        self.epochs: list[np.ndarray] = []
        self.loss: list[np.ndarray] = []
        self.val: list[np.ndarray] = []

    def add(self, start: int, loss: np.ndarray, val: np.ndarray | None) -> None:
        """``loss[i]`` is epoch ``start + i + 1``'s (1-based)."""
        bad = ~np.isfinite(loss)
        if bad.any():
            first = int(np.argmax(bad))
            self._keep(start, loss[:first], None if val is None else val[:first])
            epoch = start + first + 1
            raise Diverged(
                f"the training loss became {loss[first]} at epoch {epoch}",
                epoch=epoch,
                hint=DIVERGED_HINT,
            )
        self._keep(start, loss, val)

    def _keep(self, start: int, loss: np.ndarray, val: np.ndarray | None) -> None:
        numbers = np.arange(start + 1, start + 1 + len(loss), dtype=np.int32)
        keep = (numbers % self.every == 0) | (numbers == self.total)
        self.epochs.append(numbers[keep])
        self.loss.append(loss[keep].astype(np.float32))
        if val is not None:
            self.val.append(val[keep].astype(np.float32))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        cat = np.concatenate
        epochs = cat(self.epochs) if self.epochs else np.zeros(0, np.int32)
        loss = cat(self.loss) if self.loss else np.zeros(0, np.float32)
        val = cat(self.val) if self.val else None
        return epochs, loss, val


EpochFn = Callable[[], torch.Tensor]


def _loop(
    spec: TrainingSpec,
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    device: str,
    seed: int,
    on_progress: ProgressFn | None,
    should_stop: StopFn | None,
    *,
    fused: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The epoch loop on the device: the plain autograd step, or (``fused``) the same SGD
    step on squared loss with the gradient written out, which skips autograd's bookkeeping."""
    dev = torch.device(device)
    model.to(dev)
    xt = torch.as_tensor(x_train, device=dev)
    yt = torch.as_tensor(y_train, device=dev)
    xv = torch.as_tensor(x_val, device=dev) if x_val is not None else None
    yv = torch.as_tensor(y_val, device=dev) if y_val is not None else None
    crit = make_loss(spec)
    n = xt.shape[0]
    batch = spec.batch_size if spec.batch_size and spec.batch_size < n else None
    gen = torch.Generator(device=dev).manual_seed(seed) if batch else None
    step = _FusedSGD(spec, model) if fused else _AutogradStep(spec, model, crit)

    def epoch() -> torch.Tensor:
        if batch is None:
            return step(xt, yt)  # (N, in) -> (N, out) -> scalar
        perm = torch.randperm(n, generator=gen, device=dev)
        total = torch.zeros((), device=dev)
        if not fused:  # the plain path indexes as a hand-written loop does
            for s in range(0, n, batch):
                idx = perm[s : s + batch]
                total += step(xt[idx], yt[idx]) * idx.shape[0]
            return total / n
        # the same batches, gathered many at a time with index_select (several times faster
        # than advanced indexing on the CPU), then sliced as views; a few MB held at a time
        span = batch * max(1, _GATHER_ROWS // batch)
        for g in range(0, n, span):
            idx = perm[g : g + span]
            xs, ys = torch.index_select(xt, 0, idx), torch.index_select(yt, 0, idx)
            for s in range(0, idx.shape[0], batch):
                xb = xs[s : s + batch]
                total += step(xb, ys[s : s + batch]) * xb.shape[0]
        return total / n

    def val() -> torch.Tensor | None:
        if xv is None:
            return None
        with torch.no_grad():
            return crit(model(xv), yv)  # the same weights as this epoch's training loss

    logger = _Logger(spec)
    try:
        _run_chunks(spec, epoch, val, dev, logger, on_progress, should_stop)
    except TrainingError as e:  # keep what was learnt before the end, for the job's history
        e.extra["history"] = logger.arrays()
        raise
    return logger.arrays()


class _AutogradStep:
    """The seed program's step: forward, loss, zero_grad, backward, step."""

    def __init__(self, spec: TrainingSpec, model: nn.Module, crit: nn.Module) -> None:
        self.model, self.crit = model, crit
        self.opt = make_optimizer(spec, list(model.parameters()))

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = self.crit(self.model(xb), yb)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.detach()


class _FusedSGD:
    """torch.optim.SGD's update on mean squared loss, with the gradient in closed form: for
    ``r = x W^T + b - y`` over m rows and k targets, dW = 2 r^T x / (m k), db = 2 sum(r) / (m k).
    Weight decay, momentum (first step b = g), dampening and Nesterov follow PyTorch's order."""

    def __init__(self, spec: TrainingSpec, model: nn.Module) -> None:
        opt = spec.optimizer
        assert isinstance(opt, SGDSpec)
        self.opt = opt
        self.params = [p for p in (model.linear.weight, model.linear.bias) if p is not None]
        self.bufs: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        w = self.params[0]
        b = self.params[1] if len(self.params) > 1 else None
        r = torch.addmm(b, xb, w.T) if b is not None else xb @ w.T  # (m, k)
        r -= yb
        loss = (r * r).mean()
        r *= 2.0 / r.numel()
        grads = [r.T @ xb] + ([r.sum(0)] if b is not None else [])
        o = self.opt
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            if o.weight_decay:
                g = g.add(p, alpha=o.weight_decay)
            if o.momentum:
                buf = self.bufs[i]
                if buf is None:
                    buf = self.bufs[i] = g.clone()
                else:
                    buf.mul_(o.momentum).add_(g, alpha=1 - o.dampening)
                g = g.add(buf, alpha=o.momentum) if o.nesterov else buf
            p.add_(g, alpha=-o.lr)
        return loss


def _run_chunks(
    spec: TrainingSpec,
    epoch: EpochFn,
    val: Callable[[], torch.Tensor | None],
    dev: torch.device,
    logger: _Logger,
    on_progress: ProgressFn | None,
    should_stop: StopFn | None,
) -> None:
    """Epochs in chunks of about ``_CHUNK_SECONDS``: the losses stay on the device and leave
    it once per chunk, where progress is reported and cancellation checked."""
    done = 0
    chunk = 16
    with_val = val() is not None
    while done < spec.epochs:
        size = min(chunk, spec.epochs - done)
        loss_buf = torch.empty(size, device=dev)
        val_buf = torch.empty(size, device=dev) if with_val else None
        t0 = time.perf_counter()
        for i in range(size):
            if val_buf is not None:
                val_buf[i] = val()
            loss_buf[i] = epoch()
        host_loss = loss_buf.cpu().numpy()  # the one sync of this chunk
        host_val = val_buf.cpu().numpy() if val_buf is not None else None
        logger.add(done, host_loss, host_val)
        done += size
        if on_progress is not None:
            on_progress(
                done, float(host_loss[-1]), None if host_val is None else float(host_val[-1])
            )
        if should_stop is not None and should_stop():
            raise Cancelled(f"cancelled at epoch {done}", epoch=done)
        elapsed = time.perf_counter() - t0
        chunk = max(1, min(8192, int(size * _CHUNK_SECONDS / max(elapsed, 1e-6))))
