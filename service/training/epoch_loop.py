"""The epoch loop on the device, for every engine but the closed form.

Epochs run in chunks of about ``_CHUNK_SECONDS``: the losses stay on the device and leave it
once a chunk, where progress is reported and cancellation checked, so the loop never syncs per
epoch. Early stopping is decided on the device too (best loss, best weights and the patience
count are tensors) and read at the chunk's end; the only per-epoch syncs are a trace's first
epochs and ReduceLROnPlateau, which reads its metric every epoch as PyTorch's does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from service.errors import Cancelled, Diverged, TrainingError
from service.training.spec import EarlyStoppingSpec, PlateauLRSpec, SGDSpec, TrainingSpec

ProgressFn = Callable[[int, float, float | None], None]
StopFn = Callable[[], bool]
HeadFn = Callable[[torch.Tensor], torch.Tensor]  # a registered kind's ``head(z)``

_GATHER_ROWS = 1 << 16  # rows gathered at once for mini-batches
_CHUNK_SECONDS = 0.1  # a chunk's length in time: bounds cancel latency and progress rate
DIVERGED_HINT = "lower the learning rate or standardize the inputs (scale x to unit variance)"


@dataclass
class LoopResult:
    epochs: np.ndarray  # int32, logged epoch numbers (1-based)
    loss: np.ndarray  # float32
    val_loss: np.ndarray | None
    stopped: dict[str, Any] | None = None  # early stopping: epoch, best_epoch, best_val_loss
    trace: dict[str, Any] | None = None


@dataclass
class LoopCall:
    """What ``run_loop`` was asked to train: one trial, as a batch of trials takes it."""

    spec: TrainingSpec
    model: nn.Module
    crit: nn.Module
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    device: str
    seed: int
    fused: bool


LOOP_HOOK: ContextVar[Callable[[LoopCall], LoopResult] | None] = ContextVar(
    "fitserve_loop_hook", default=None)
"""Set by a batch of trials (training/batched.py): ``run_loop`` hands its trial to it and
returns what it answers (the trial's part of the batch) instead of running the epochs."""


class _Logger:
    """Collects the chunks of losses that leave the device and checks them."""

    def __init__(self, spec: TrainingSpec) -> None:
        self.every = spec.log_every
        self.total = spec.epochs
        self.epochs: list[np.ndarray] = []
        self.loss: list[np.ndarray] = []
        self.val: list[np.ndarray] = []

    def add(self, start: int, loss: np.ndarray, val: np.ndarray | None, last: bool) -> None:
        """``loss[i]`` is epoch ``start + i + 1``'s (1-based); ``last``: the run ends here."""
        bad = ~np.isfinite(loss)
        if bad.any():
            first = int(np.argmax(bad))
            self._keep(start, loss[:first], None if val is None else val[:first], False)
            epoch = start + first + 1
            raise Diverged(
                f"the training loss became {loss[first]} at epoch {epoch}",
                epoch=epoch,
                hint=DIVERGED_HINT,
            )
        self._keep(start, loss, val, last)

    def _keep(self, start: int, loss: np.ndarray, val: np.ndarray | None, last: bool) -> None:
        numbers = np.arange(start + 1, start + 1 + len(loss), dtype=np.int32)
        keep = (numbers % self.every == 0) | (numbers == self.total)
        if last and len(numbers):
            keep[-1] = True  # an early stop's epoch is logged like the last one
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


def make_optimizer(spec: TrainingSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = spec.optimizer
    if isinstance(o, SGDSpec):
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, dampening=o.dampening,
                               nesterov=o.nesterov, weight_decay=o.weight_decay)
    if o.name in ("adam", "adamw"):
        cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        wd = o.weight_decay if o.weight_decay is not None else (0.01 if o.name == "adamw" else 0.0)
        return cls(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=wd, amsgrad=o.amsgrad)
    if o.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=o.lr, alpha=o.alpha, eps=o.eps,
                                   momentum=o.momentum, weight_decay=o.weight_decay,
                                   centered=o.centered)
    raise TrainingError(f"unknown optimizer {o!r}")


def make_scheduler(spec: TrainingSpec, opt: torch.optim.Optimizer) -> Any:
    s = spec.scheduler
    if s is None:
        return None
    lrs = torch.optim.lr_scheduler
    if s.name == "step":
        return lrs.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
    if s.name == "exponential":
        return lrs.ExponentialLR(opt, gamma=s.gamma)
    if s.name == "cosine":
        return lrs.CosineAnnealingLR(opt, T_max=s.t_max or spec.epochs, eta_min=s.eta_min)
    assert isinstance(s, PlateauLRSpec)
    return lrs.ReduceLROnPlateau(opt, mode="min", factor=s.factor, patience=s.patience,
                                 threshold=s.threshold, cooldown=s.cooldown, min_lr=s.min_lr)


class AutogradStep:
    """The seed program's step: forward, loss, zero_grad, backward, (clip), step."""

    def __init__(self, spec: TrainingSpec, model: nn.Module, crit: nn.Module) -> None:
        self.model, self.crit = model, crit
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = make_optimizer(spec, self.params)
        self.clip = spec.grad_clip
        self.tracer: _Tracer | None = None

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        head = cast(HeadFn, self.model.head)
        out = head(xb)  # the data was transformed once, before the loop
        loss = self.crit(out, yb)
        tracer = self.tracer
        if tracer is not None:
            tracer.before(out, yb, loss, self.opt)
        self.opt.zero_grad()
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        if tracer is not None:
            tracer.after()
        return loss.detach()


class FusedSGD:
    """torch.optim.SGD's update on mean squared loss, with the gradient in closed form: for
    ``r = x W^T + b - y`` over m rows and k targets, dW = 2 r^T x / (m k), db = 2 sum(r) / (m k).
    Weight decay, momentum (first step b = g), dampening and Nesterov follow PyTorch's order."""

    def __init__(self, spec: TrainingSpec, model: nn.Module) -> None:
        opt = spec.optimizer
        assert isinstance(opt, SGDSpec)
        self.opt = opt
        linear = cast(nn.Linear, model.linear)  # the fused step runs only a linear_head kind
        self.params = [p for p in (linear.weight, linear.bias) if p is not None]
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


class _EarlyStopper:
    """Early stopping decided on the device: the best validation loss, its epoch, a copy of
    its weights and the epochs since, as tensors; once stopped, nothing more changes, so
    the epochs a chunk runs past the stop leave the kept weights as a per-epoch check would.
    Each epoch scores the weights it starts from (as the history's val_loss does), and the
    final weights are scored at the end."""

    def __init__(self, es: EarlyStoppingSpec, model: nn.Module, dev: torch.device) -> None:
        self.patience, self.min_delta = es.patience, es.min_delta
        self.params = list(model.parameters())
        self.best_params = [p.detach().clone() for p in self.params]
        self.best = torch.full((), math.inf, device=dev)
        self.epoch = torch.zeros((), dtype=torch.int64, device=dev)
        self.best_epoch = torch.zeros((), dtype=torch.int64, device=dev)
        self.since = torch.zeros((), dtype=torch.int64, device=dev)
        self.stop_epoch = torch.zeros((), dtype=torch.int64, device=dev)
        self.stopped = torch.zeros((), dtype=torch.bool, device=dev)

    @torch.no_grad()
    def observe(self, val: torch.Tensor) -> None:
        """``val`` is the loss of the current weights, before this epoch's step."""
        running = ~self.stopped
        self.epoch += running.long()
        improved = (val < self.best - self.min_delta) & running
        self.best = torch.where(improved, val, self.best)
        self.best_epoch = torch.where(improved, self.epoch, self.best_epoch)
        for kept, p in zip(self.best_params, self.params, strict=True):
            kept.copy_(torch.where(improved, p.detach(), kept))
        self.since = torch.where(improved, torch.zeros_like(self.since),
                                 self.since + running.long())
        newly = running & (self.since >= self.patience)
        self.stop_epoch = torch.where(newly, self.epoch, self.stop_epoch)
        self.stopped |= newly

    def result(self) -> dict[str, Any] | None:
        """Host side, once a chunk: where it stopped, if it has; the best weights restored."""
        if not bool(self.stopped):
            return None
        with torch.no_grad():
            for p, kept in zip(self.params, self.best_params, strict=True):
                p.copy_(kept)
        # observation k scores the weights entering epoch k: those after k - 1 epochs
        epoch, best = int(self.stop_epoch), int(self.best_epoch) - 1
        return {"epoch": epoch, "best_epoch": best, "best_val_loss": float(self.best),
                "message": f"the validation loss did not improve by more than "
                           f"{self.min_delta:g} for {self.patience} epochs; the model keeps "
                           f"the weights after epoch {best}"}

    def finish(self, val: torch.Tensor) -> None:
        """The run ended without a stop: the final weights are scored too, and the model
        keeps the best of all."""
        self.observe(val)
        with torch.no_grad():
            for p, kept in zip(self.params, self.best_params, strict=True):
                p.copy_(kept)


def autograd_paths(loss: torch.Tensor, names: dict[int, str]) -> dict[str, list[str]]:
    """For each parameter, the autograd functions from ``loss`` back to its AccumulateGrad."""
    paths: dict[str, list[str]] = {}

    def walk(fn: Any, path: list[str]) -> None:
        if fn is None:
            return
        path = [*path, type(fn).__name__]
        var = getattr(fn, "variable", None)
        if var is not None and id(var) in names:
            paths.setdefault(names[id(var)], path)
        for nxt, _ in fn.next_functions:
            walk(nxt, path)

    walk(loss.grad_fn, [])
    return paths


class _Tracer:
    """Records the first epochs of a full-batch run: output, loss, each parameter before,
    its gradient, after; and once, the autograd chain. Syncs per traced epoch (N <= 100)."""

    def __init__(self, model: nn.Module, epochs: int, rows: int) -> None:
        self.named = list(model.named_parameters())
        self.epochs, self.rows = epochs, rows
        self.records: list[dict[str, Any]] = []
        self.graph: dict[str, list[str]] = {}
        self._pending: dict[str, Any] | None = None

    def before(self, out: torch.Tensor, target: torch.Tensor, loss: torch.Tensor,
               opt: torch.optim.Optimizer) -> None:
        if not self.graph:
            self.graph = autograd_paths(loss, {id(p): n for n, p in self.named})
        t = target[: self.rows]
        self._pending = {
            "epoch": len(self.records) + 1,
            "lr": float(opt.param_groups[0]["lr"]),
            "output": out[: self.rows].detach().cpu().tolist(),
            "target": (t.unsqueeze(1) if t.dim() == 1 else t).detach().cpu().tolist(),
            "loss": float(loss.detach()),
            "before": {n: p.detach().cpu().clone() for n, p in self.named},
        }

    def after(self) -> None:
        rec = self._pending
        assert rec is not None
        before = rec.pop("before")
        rec["parameters"] = {
            n: {"before": before[n].tolist(),
                "grad": None if p.grad is None else p.grad.detach().cpu().tolist(),
                "after": p.detach().cpu().tolist()}
            for n, p in self.named
        }
        self.records.append(rec)
        self._pending = None

    @property
    def done(self) -> bool:
        return len(self.records) >= self.epochs

    def result(self) -> dict[str, Any]:
        chains = sorted({" -> ".join(p) for p in self.graph.values()})
        return {"rows": self.rows, "graph": self.graph, "graph_text": "; ".join(chains),
                "epochs": self.records}


def run_loop(
    spec: TrainingSpec,
    model: nn.Module,
    crit: nn.Module,
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
    trace_rows: int = 20,
) -> LoopResult:
    """Train ``model.head`` on transformed rows: the plain autograd step, or (``fused``) the
    same SGD step on squared loss with the gradient written out, which skips autograd."""
    hook = LOOP_HOOK.get()
    if hook is not None:
        return hook(LoopCall(spec, model, crit, x_train, y_train, x_val, y_val, device, seed,
                             fused))
    dev = torch.device(device)
    model.to(dev)
    xt = torch.as_tensor(x_train, device=dev)
    yt = torch.as_tensor(y_train, device=dev)
    xv = torch.as_tensor(x_val, device=dev) if x_val is not None else None
    yv = torch.as_tensor(y_val, device=dev) if y_val is not None else None
    n = xt.shape[0]
    batch = spec.batch_size if spec.batch_size and spec.batch_size < n else None
    gen = torch.Generator(device=dev).manual_seed(seed) if batch else None
    step: AutogradStep | FusedSGD = (
        FusedSGD(spec, model) if fused else AutogradStep(spec, model, crit)
    )
    tracer = None
    if spec.trace_epochs and isinstance(step, AutogradStep):
        tracer = step.tracer = _Tracer(model, min(spec.trace_epochs, spec.epochs),
                                       min(trace_rows, n))
    sched = make_scheduler(spec, step.opt) if isinstance(step, AutogradStep) else None
    stopper = (_EarlyStopper(spec.early_stopping, model, dev)
               if spec.early_stopping is not None else None)

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

    head = cast(HeadFn, model.head)

    def val() -> torch.Tensor | None:
        if xv is None:
            return None
        with torch.no_grad():
            return crit(head(xv), yv)  # the same weights as this epoch's training loss

    logger = _Logger(spec)
    result = LoopResult(np.zeros(0, np.int32), np.zeros(0, np.float32), None)
    try:
        done = 0
        chunk = 1 if tracer is not None else 16
        with_val = xv is not None
        while done < spec.epochs:
            size = min(chunk, spec.epochs - done)
            loss_buf = torch.empty(size, device=dev)
            val_buf = torch.empty(size, device=dev) if with_val else None
            t0 = time.perf_counter()
            for i in range(size):
                if val_buf is not None:
                    v = val()
                    assert v is not None  # val_buf is there only with a validation split
                    val_buf[i] = v
                    if stopper is not None:
                        stopper.observe(v)
                loss_buf[i] = epoch()
                if sched is not None:
                    if isinstance(spec.scheduler, PlateauLRSpec):
                        sched.step(val_buf[i] if val_buf is not None else loss_buf[i])
                    else:
                        sched.step()
            host_loss = loss_buf.cpu().numpy()  # the one sync of this chunk
            host_val = val_buf.cpu().numpy() if val_buf is not None else None
            stop = stopper.result() if stopper is not None else None
            if stop is not None:  # keep the epochs up to the stop, drop those run past it
                keep = stop["epoch"] - done
                host_loss = host_loss[:keep]
                host_val = None if host_val is None else host_val[:keep]
            last = stop is not None or done + size >= spec.epochs
            logger.add(done, host_loss, host_val, last)
            done += len(host_loss)
            if on_progress is not None and len(host_loss):
                on_progress(done, float(host_loss[-1]),
                            None if host_val is None else float(host_val[-1]))
            if stop is not None:
                result.stopped = stop
                break
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled at epoch {done}", epoch=done)
            if tracer is not None and not tracer.done:
                continue  # traced epochs go one at a time
            # a tracer is only ever given to an AutogradStep
            if tracer is not None and isinstance(step, AutogradStep) and step.tracer is not None:
                step.tracer = None
                chunk = 16
                continue
            elapsed = time.perf_counter() - t0
            chunk = max(1, min(8192, int(size * _CHUNK_SECONDS / max(elapsed, 1e-6))))
        if stopper is not None and result.stopped is None:
            v = val()
            assert v is not None  # early stopping is only accepted with a validation split
            stopper.finish(v)
    except TrainingError as e:  # keep what was learnt before the end, for the job's history
        e.extra["history"] = logger.arrays()
        if tracer is not None:
            e.extra["trace"] = tracer.result()
        raise
    result.epochs, result.loss, result.val_loss = logger.arrays()
    if tracer is not None:
        result.trace = tracer.result()
    return result
