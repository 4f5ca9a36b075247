"""A sweep's trials that share a model shape, trained together as one tensor program.

Trials that differ only in their optimizer's settings, their seed (initial weights,
validation split, mini-batch order) or their epochs train as a batch: their parameters are
stacked, one row per trial, into one flat tensor ``(B, P)``; the model's ``head`` runs on
every row at once (``torch.func.functional_call`` under ``torch.vmap``); the per-trial losses
are summed, so one backward pass gives each row its own trial's gradient (an mlp trained
on MSE, the usual sweep, has its forward and backward passes written out instead: a third
of the passes over the activations, see ``_written_gradient``); and the optimizer's
step (SGD, Adam/AdamW, RMSprop, written out as PyTorch's single-tensor step computes it) runs
on the whole ``(B, P)`` tensor, its settings a column per trial. The losses stay on the device
and leave once a chunk of epochs, as in the plain loop (epoch_loop.py): no per-epoch sync.

A trial leaves the batch at the end of a chunk (its rows dropped, the others go on) when it
has run its epochs, when its loss is no longer finite (diverged, at the epoch the plain loop
would say), or when it is cancelled (a pruned trial's job is); a batch with one trial left
still runs as a batch.

Each trial is held to the same trial run alone, as an ordinary job: the same preparation
(fit.py up to ``run_loop``, run for each trial: split, standardization, initial weights
from its seed), and after the batch the same end (metrics, checkpoint). ``collecting`` and
``replaying`` hook ``run_loop`` for that (epoch_loop.py's ``LOOP_HOOK``): the first takes
the trial as ``run_loop`` received it and stops the fit, the second answers its batch's
result.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from service.errors import Cancelled, TrainingError
from service.training.epoch_loop import (
    LOOP_HOOK,
    HeadFn,
    LoopCall,
    LoopResult,
    _Logger,
)
from service.training.spec import AdamSpec, RMSpropSpec, SGDSpec, TrainingSpec

_CHUNK_SECONDS = 0.1  # as the plain loop's chunks: bounds cancel latency and progress rate
_GROUP_ELEMENTS = {"cpu": 1 << 20, "default": 1 << 27}
"""Activation elements one batch holds per layer pass (rows x trials x layer widths): on the
CPU a batch that stays within the caches trains faster per trial than a larger one (and
trials beyond it go in another batch); on an accelerator one large batch is best."""

VARYING = {"epochs", "log_every", "seed"}
"""Job fields trials of one batch may differ in (besides the optimizer's numbers)."""
_STEP_FLAGS = {"name", "nesterov", "amsgrad", "centered"}
"""Optimizer fields that change the step's program: equal across a batch."""


def batch_key(spec: TrainingSpec) -> str | None:
    """Trials whose keys are equal train together as one batch: the same model, data, loss
    and optimizer kind, differing at most in the optimizer's numbers, the seed and the
    epochs. None: not such a trial (the closed form's trials batch on their own, see
    closed_form.py's ``batch_key``; a scheduler, early stopping, a trace or a warm start
    run alone)."""
    from service.training.closed_form import batch_key as closed_form_key

    if closed_form_key(spec) is not None:
        return None
    if (spec.scheduler is not None or spec.early_stopping is not None or spec.trace_epochs
            or spec.init_from is not None):
        return None
    values = spec.model_dump(mode="json")
    for name in VARYING:
        values.pop(name, None)
    values["optimizer"] = {k: v for k, v in values["optimizer"].items() if k in _STEP_FLAGS}
    return "loop:" + json.dumps(values, sort_keys=True)


# ---------------------------------------------------------------- hooks into fit's run_loop


class Collected(BaseException):  # noqa: N818 (not an error: it stops a fit on purpose)
    """Raised from ``run_loop`` while collecting: the trial is taken, the fit stops there.
    A BaseException so that nothing on the way (run_job's handlers) records it as the
    job's failure."""


@dataclass
class _Box:
    call: LoopCall | None = None


@contextmanager
def collecting() -> Iterator[_Box]:
    """A fit run inside stops at ``run_loop`` with ``Collected``; the box holds the trial."""
    box = _Box()

    def take(call: LoopCall) -> LoopResult:
        box.call = call
        raise Collected

    token = LOOP_HOOK.set(take)
    try:
        yield box
    finally:
        LOOP_HOOK.reset(token)


@dataclass
class TrialEnd:
    """How one trial of a batch ended: its loop's result and final weights, or its error
    (Diverged, Cancelled) carrying the history it had."""

    result: LoopResult | None = None
    state: dict[str, np.ndarray] | None = None
    error: TrainingError | None = None


@contextmanager
def replaying(end: TrialEnd) -> Iterator[None]:
    """A fit run inside gets this trial's end from ``run_loop``: its error raised, or its
    final weights put into the model and its losses returned."""

    def answer(call: LoopCall) -> LoopResult:
        if end.error is not None:
            raise end.error
        assert end.result is not None and end.state is not None
        with torch.no_grad():
            for name, p in call.model.named_parameters():
                p.copy_(torch.from_numpy(end.state[name]))
        return end.result

    token = LOOP_HOOK.set(answer)
    try:
        yield
    finally:
        LOOP_HOOK.reset(token)


# ---------------------------------------------------------------- grouping


def group_size(call: LoopCall) -> int:
    """How many trials like this one train in one batch on its device."""
    rows = call.x_train.shape[0]
    if call.spec.batch_size:
        rows = min(rows, call.spec.batch_size)
    widths = call.x_train.shape[1] + sum(  # each layer's outputs: a weight's first axis
        p.shape[0] for p in call.model.parameters() if p.dim() >= 2)
    budget = _GROUP_ELEMENTS.get(torch.device(call.device).type, _GROUP_ELEMENTS["default"])
    return max(1, budget // max(1, rows * widths))


# ---------------------------------------------------------------- the optimizers' steps


def _column(values: Sequence[float], dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(list(values), dtype=dtype, device=dev)[:, None]  # (B, 1)


class _Step:
    """An optimizer's step on stacked flat parameters ``(B, P)``, a row per trial."""

    def __init__(self, opts: Sequence[Any], p: torch.Tensor) -> None:
        self.dev = p.device
        # settings derived in float64 where PyTorch derives them in Python floats (not MPS)
        self.wide = torch.float32 if p.device.type == "mps" else torch.float64
        self.count = 0
        self.state: dict[str, torch.Tensor] = {}
        self.settings: dict[str, torch.Tensor] = {}

    def col(self, name: str, values: Sequence[float], wide: bool = False) -> None:
        self.settings[name] = _column(values, self.dev, self.wide if wide else torch.float32)

    def keep(self, rows: torch.Tensor) -> None:
        """Only these trials go on."""
        self.state = {k: v[rows] for k, v in self.state.items()}
        self.settings = {k: v[rows] for k, v in self.settings.items()}

    def __call__(self, p: torch.Tensor, g: torch.Tensor) -> None:
        raise NotImplementedError


class _SGD(_Step):
    def __init__(self, opts: Sequence[Any], p: torch.Tensor) -> None:
        super().__init__(opts, p)
        self.nesterov = bool(opts[0].nesterov)
        self.decay = any(o.weight_decay for o in opts)
        self.momentum = any(o.momentum for o in opts)
        self.col("lr", [o.lr for o in opts])
        self.col("wd", [o.weight_decay for o in opts])
        self.col("m", [o.momentum for o in opts])
        # without momentum PyTorch ignores dampening: the buffer is then the gradient itself
        self.col("keep", [1 - o.dampening if o.momentum else 1.0 for o in opts])

    def __call__(self, p: torch.Tensor, g: torch.Tensor) -> None:
        s = self.settings
        if self.decay:
            g = g + s["wd"] * p
        if self.momentum:
            buf = self.state.get("buf")
            if buf is None:
                buf = self.state["buf"] = g.clone()
            else:
                buf.mul_(s["m"]).add_(s["keep"] * g)
            g = g + s["m"] * buf if self.nesterov else buf
        p.sub_(s["lr"] * g)


class _Adam(_Step):
    def __init__(self, opts: Sequence[Any], p: torch.Tensor) -> None:
        super().__init__(opts, p)
        self.decoupled = opts[0].name == "adamw"
        self.amsgrad = bool(opts[0].amsgrad)
        default_wd = 0.01 if self.decoupled else 0.0
        wd = [o.weight_decay if o.weight_decay is not None else default_wd for o in opts]
        self.decay = any(wd)
        self.col("lr", [o.lr for o in opts], wide=True)
        self.col("b1", [o.betas[0] for o in opts], wide=True)
        self.col("b2", [o.betas[1] for o in opts], wide=True)
        self.col("eps", [o.eps for o in opts])
        self.col("wd", wd, wide=True)
        self.state = {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}
        if self.amsgrad:
            self.state["vmax"] = torch.zeros_like(p)

    def __call__(self, p: torch.Tensor, g: torch.Tensor) -> None:
        s, st = self.settings, self.state
        self.count += 1
        if self.decay:
            if self.decoupled:
                p.mul_((1 - s["lr"] * s["wd"]).float())
            else:
                g = g + s["wd"].float() * p
        st["m"].lerp_(g, (1 - s["b1"]).float())
        st["v"].mul_(s["b2"].float()).add_((1 - s["b2"]).float() * g * g)
        bc1 = 1 - s["b1"] ** self.count
        bc2_sqrt = (1 - s["b2"] ** self.count) ** 0.5
        v = st["v"]
        if self.amsgrad:
            torch.maximum(st["vmax"], v, out=st["vmax"])
            v = st["vmax"]
        denom = (v.sqrt() / bc2_sqrt.float()).add_(s["eps"])
        p.sub_((s["lr"] / bc1).float() * (st["m"] / denom))


class _RMSprop(_Step):
    def __init__(self, opts: Sequence[Any], p: torch.Tensor) -> None:
        super().__init__(opts, p)
        self.centered = bool(opts[0].centered)
        self.decay = any(o.weight_decay for o in opts)
        self.momentum = any(o.momentum for o in opts)
        self.col("lr", [o.lr for o in opts])
        self.col("alpha", [o.alpha for o in opts])
        self.col("rest", [1 - o.alpha for o in opts])
        self.col("eps", [o.eps for o in opts])
        self.col("wd", [o.weight_decay for o in opts])
        self.col("m", [o.momentum for o in opts])
        self.state = {"sq": torch.zeros_like(p)}
        if self.centered:
            self.state["avg"] = torch.zeros_like(p)
        if self.momentum:
            self.state["buf"] = torch.zeros_like(p)

    def __call__(self, p: torch.Tensor, g: torch.Tensor) -> None:
        s, st = self.settings, self.state
        if self.decay:
            g = g + s["wd"] * p
        st["sq"].mul_(s["alpha"]).add_(s["rest"] * g * g)
        if self.centered:
            st["avg"].lerp_(g, s["rest"])
            avg = (st["sq"] - st["avg"] * st["avg"]).sqrt_()
        else:
            avg = st["sq"].sqrt()
        avg.add_(s["eps"])
        if self.momentum:
            st["buf"].mul_(s["m"]).add_(g / avg)
            p.sub_(s["lr"] * st["buf"])
        else:
            p.sub_(s["lr"] * (g / avg))


def _make_step(specs: Sequence[TrainingSpec], p: torch.Tensor) -> _Step:
    opts = [s.optimizer for s in specs]
    if all(isinstance(o, SGDSpec) for o in opts):
        return _SGD(opts, p)
    if all(isinstance(o, AdamSpec) for o in opts):
        return _Adam(opts, p)
    if all(isinstance(o, RMSpropSpec) for o in opts):
        return _RMSprop(opts, p)
    raise TrainingError("a batch of trials needs one optimizer kind")


# ---------------------------------------------------------------- the batch


class _Head(nn.Module):
    """The model's ``head`` as a module's forward, its parameters under their own names."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return cast(HeadFn, self.model.head)(z)


class _StackedLinear(nn.Module):
    """``nn.Linear`` over a stack of trials: weight (B, O, K), bias (B, O), rows (B, N, K)
    or one set of rows for all (N, K) -> (B, N, O). A layer with one input or one output
    is a broadcast product (a batched matmul with an inner size of 1, forward or backward,
    is many times slower on the CPU)."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if w.shape[2] == 1:  # (B, N, 1) * (B, 1, O)
            out = z * w.transpose(1, 2)
        elif w.shape[1] == 1:  # sum_k (B, N, K) * (B, 1, K)
            out = (z * w).sum(-1, keepdim=True)
        else:
            out = torch.matmul(z, w.transpose(1, 2))
        return out if self.bias is None else out + self.bias[:, None, :]


_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.LeakyReLU, nn.GELU, nn.SiLU)
Forward = Callable[[dict[str, torch.Tensor], torch.Tensor, bool], torch.Tensor]
"""(stacked parameters by name, rows, whether the rows are one set per trial) -> outputs
(B, N, out)."""


def _stacked_forward(model: nn.Module) -> Forward | None:
    """The head run on stacked parameters by layers that take a trial axis: a copy of the
    model with each ``nn.Linear`` made a ``_StackedLinear``. None when the model has other
    layers with parameters or of unknown kinds (the head then runs under ``torch.vmap``)."""
    twin = copy.deepcopy(model)
    layers: dict[str, _StackedLinear] = {}
    for name, module in list(twin.named_modules()):
        if isinstance(module, nn.Linear):
            parent, _, child = name.rpartition(".")
            stacked = _StackedLinear()
            setattr(twin.get_submodule(parent) if parent else twin, child, stacked)
            layers[name] = stacked
        elif name and not isinstance(module, (nn.Sequential, *_ELEMENTWISE)):
            return None
    covered = {f"{n}.{p}" for n in layers for p in ("weight", "bias")}
    if not {n for n, _ in model.named_parameters()} <= covered or list(twin.buffers()):
        return None

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor, stacked: bool
                ) -> torch.Tensor:
        for name, layer in layers.items():
            layer.weight = params[f"{name}.weight"]
            layer.bias = params.get(f"{name}.bias")
        return cast(HeadFn, twin.head)(x)

    return forward


def _vmapped_forward(model: nn.Module) -> Forward:
    head = _Head(model)

    def one(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(head, {f"model.{k}": v for k, v in p.items()}, (x,))

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor, stacked: bool
                ) -> torch.Tensor:
        return torch.vmap(one, in_dims=(0, 0 if stacked else None))(params, x)

    return forward


def _forward_for(model: nn.Module, dev: torch.device) -> Forward:
    """The stacked layers when they give the model's own outputs (checked on a few rows of
    random weights, as the model's head computes them alone), else the head under vmap."""
    model = model.to(dev)
    fast = _stacked_forward(model)
    if fast is None:
        return _vmapped_forward(model)
    params = {n: p.detach()[None] for n, p in model.named_parameters()}
    first = next(model.parameters(), None)
    if first is None:
        return _vmapped_forward(model)
    try:
        inputs = next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features
        probe = torch.randn(3, inputs, device=dev, generator=torch.Generator(dev).manual_seed(0))
        with torch.no_grad():
            want = cast(HeadFn, model.head)(probe)
            got = fast(params, probe, False)[0]
        if got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            return fast
    except Exception:  # a head that does more than its layers: it runs under vmap
        pass
    return _vmapped_forward(model)


# ---------------------------------------------------------------- the mlp's gradient written out


def _mm(a: torch.Tensor, b: torch.Tensor, space: _Space, name: str) -> torch.Tensor:
    """``a @ b`` over a trial axis (either side may lack it), into the workspace's buffer
    ``name``. An inner size of 1 is a broadcast product, and a product into one column is
    taken transposed, ``(bᵀ aᵀ)ᵀ`` (small, not buffered): on the CPU a batched matmul of
    either shape is several times slower than these."""
    if b.shape[-1] == 1 and a.shape[-1] > 1:
        return torch.matmul(b.mT, a.mT).mT
    lead = a.shape[:-2] if a.dim() > b.dim() else b.shape[:-2]  # (), or (B,) on either side
    out = space.get(name, (*lead, a.shape[-2], b.shape[-1]), a)
    if a.shape[-1] == 1:
        return torch.mul(a, b, out=out)
    return torch.matmul(a, b, out=out)


class _Space:
    """The large tensors of an epoch (a layer's outputs, the gradient at its input), kept
    from one epoch to the next by name and shape: a new one of some megabytes each time is
    fresh pages from the system, their faults as costly as the pass that fills them."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        key = (name, shape)
        t = self.held.get(key)
        if t is None:
            if len(self.held) >= 32:  # shapes of trials that left the batch
                self.held.clear()
            t = self.held[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return t


_ONE = torch.tensor(1.0)


def _doubles(act: str | None, dev: torch.device) -> bool:
    """Whether a layer computes ``2h`` rather than ``h`` (its weights doubled, exactly) for
    ``_tanh_`` to take."""
    return act == "tanh" and dev.type == "cpu"


def _tanh_(h: torch.Tensor, space: _Space, doubled: bool) -> torch.Tensor:
    """``tanh`` in place, of ``h / 2`` where ``doubled``. On the CPU as
    ``sign(h) (1 - 2 sigmoid(-2|h|))``: torch's float32 ``tanh`` there is 2 to 3 times the
    five passes of this (its ``sigmoid`` is vectorized, its ``tanh`` not), and it was most of
    a batch's epoch. Within 1.2e-7 of torch's value; above 0.5, where the gradient
    ``1 - tanh²`` rests on the last bits, within one unit in the last place (and equal to it
    for 99 % of inputs): a diverging trial's history stays the one it has alone."""
    if not doubled:
        return h.tanh_()
    sign = torch.sign(h, out=space.get("tanh", h.shape, h))
    d = h.abs_().neg_().sigmoid_()  # sigmoid(-2|x|), exact where it is small
    return torch.addcmul(sign, d, sign, value=-2, out=h)  # sign (1 - 2d), rounded once


@dataclass(frozen=True)
class _Layer:
    weight: str
    bias: str | None
    act: str | None  # "tanh", "relu" or None after the last layer


Gradient = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, bool],
                    tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""(stacked parameters by name, rows, targets, whether to go backward) -> (each trial's
loss (B,), each parameter's gradient by name, stacked; none without the backward pass). A
gradient may be one of the function's buffers: read it before the next call."""


def _layers_of(model: nn.Module) -> list[_Layer] | None:
    """The model as Linear (activation Linear)*, when its head is such an ``nn.Sequential``
    named ``layers`` (models/mlp.py), else None."""
    seq = getattr(model, "layers", None)
    if not isinstance(seq, nn.Sequential):
        return None
    acts = {nn.Tanh: "tanh", nn.ReLU: "relu"}
    out: list[_Layer] = []
    for name, module in seq.named_children():
        if isinstance(module, nn.Linear):
            if out and out[-1].act is None:
                return None  # two Linear layers in a row
            out.append(_Layer(f"layers.{name}.weight",
                              None if module.bias is None else f"layers.{name}.bias", None))
        elif type(module) in acts and out and out[-1].act is None:
            out[-1] = _Layer(out[-1].weight, out[-1].bias, acts[type(module)])
        else:
            return None
    return out if out and out[-1].act is None else None


def _written_gradient(layers: list[_Layer]) -> Gradient:
    """MSE through Linear and tanh/ReLU layers, forward and backward written out for a stack
    of trials: the activations are kept from the forward pass and reused in place, so an
    epoch makes a third of the passes over ``trials x rows x width`` that autograd makes."""

    space = _Space()

    def grad(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, backward: bool
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs: list[torch.Tensor] = []
        z = x  # (N, K) shared by the trials, or (B, N, K)
        for i, layer in enumerate(layers):
            inputs.append(z)
            w = p[layer.weight].mT  # (B, K, O)
            b = None if layer.bias is None else p[layer.bias][:, None, :]  # (B, 1, O)
            doubled = _doubles(layer.act, z.device)
            if doubled:
                w, b = w * 2, None if b is None else b * 2
            if b is not None and z.shape[-1] == 1:
                shape = (w.shape[0], *z.shape[-2:-1], w.shape[-1])
                z = torch.addcmul(b, z, w, out=space.get(f"h{i}", shape, z))
            else:
                z = _mm(z, w, space, f"h{i}")
                if b is not None:
                    z = z.add_(b)
            if layer.act == "tanh":
                _tanh_(z, space, doubled)
            elif layer.act == "relu":
                z.clamp_(min=0)
        r = z - y  # (B, N, O)
        loss = r.square().mean(dim=(1, 2))
        grads: dict[str, torch.Tensor] = {}
        if not backward:
            return loss, grads
        g = r.mul_(2.0 / (r.shape[1] * r.shape[2]))
        for i in range(len(layers) - 1, -1, -1):
            layer, z = layers[i], inputs[i]
            grads[layer.weight] = _mm(g.mT, z, space, f"w{i}")  # (B, O, K)
            if layer.bias is not None:
                grads[layer.bias] = g.sum(1)
            if i == 0:
                break
            act = layers[i - 1].act
            if i == 1 and act == "tanh" and g.shape[-1] == 1:
                _first_of_two(grads, layers[0], p[layer.weight], g, z, inputs[0])
                break
            g = _mm(g, p[layer.weight], space, f"g{i}")  # (B, N, K): at this layer's input
            if act == "tanh":  # z = tanh(h): dz/dh = 1 - z², z not needed after this
                g.mul_(torch.addcmul(_ONE, z, z, value=-1, out=z))
            elif act == "relu":
                g.mul_(z > 0)
        return loss, grads

    return grad


def _first_of_two(grads: dict[str, torch.Tensor], first: _Layer, w: torch.Tensor,
                  g: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> None:
    """The first layer's gradients of Linear, tanh, Linear to one output, without the
    gradient at the hidden layer: with ``g`` the output's (B, N, 1), ``w`` the last weight
    (B, 1, H) and ``t = 1 - z²``, the hidden layer's is ``g w t``, so its weight's is
    ``w ⊙ (g x)ᵀ t`` and its bias's ``w ⊙ gᵀ t``: one product over the rows, and the
    (B, N, H) gradient never made (two passes over it, and one to make it)."""
    t = torch.addcmul(_ONE, z, z, value=-1, out=z)  # (B, N, H); z not needed after this
    gx = g * x  # (B, N, K)
    rows = gx if first.bias is None else torch.cat([g, gx], -1)  # (B, N, [1 +] K)
    m = torch.matmul(rows.mT, t)  # (B, [1 +] K, H)
    scale = w.mT  # (B, H, 1)
    grads[first.weight] = scale * m[:, -x.shape[-1]:].mT  # (B, H, K)
    if first.bias is not None:
        grads[first.bias] = scale[..., 0] * m[:, 0]


def _gradient_for(model: nn.Module, crit: nn.Module, forward: Forward,
                  dev: torch.device) -> Gradient | None:
    """The written-out gradient when the model and loss are what it computes (MSE through
    an mlp), checked against autograd through ``forward`` on a few rows and two trials of
    random weights; else None (the batch then runs autograd)."""
    layers = _layers_of(model)
    if layers is None or type(crit) is not nn.MSELoss or crit.reduction != "mean":
        return None
    grad = _written_gradient(layers)
    gen = torch.Generator(dev).manual_seed(0)
    params = {n: torch.randn(2, *q.shape, device=dev, generator=gen, requires_grad=True)
              for n, q in model.named_parameters()}
    first = model.get_parameter(layers[0].weight)
    last = model.get_parameter(layers[-1].weight)
    x = torch.randn(5, first.shape[1], device=dev, generator=gen)
    y = torch.randn(5, last.shape[0], device=dev, generator=gen)
    try:
        want = torch.vmap(lambda out: crit(out, y))(forward(params, x, False))
        want_grads = torch.autograd.grad(want.sum(), list(params.values()))
        with torch.no_grad():
            got, got_grads = grad({n: q.detach() for n, q in params.items()}, x, y, True)
        same = torch.allclose(got, want.detach(), rtol=1e-4, atol=1e-6) and all(
            torch.allclose(got_grads[n], g, rtol=1e-4, atol=1e-6)
            for n, g in zip(params, want_grads, strict=True))
    except Exception:  # a model this does not describe: autograd trains it
        return None
    return grad if same else None


def _same(arrays: Sequence[np.ndarray | None]) -> bool:
    first = arrays[0]
    return all(a is first or (a is not None and first is not None and a.shape == first.shape
                              and np.array_equal(a, first)) for a in arrays[1:])


@dataclass
class _Data:
    """Rows on the device: one tensor the trials share, or one per trial stacked ``(B, ...)``."""

    t: torch.Tensor | None
    stacked: bool

    @classmethod
    def of(cls, arrays: Sequence[np.ndarray | None], dev: torch.device) -> _Data:
        if arrays[0] is None:
            return cls(None, False)
        if _same(arrays):
            return cls(torch.as_tensor(arrays[0], device=dev), False)
        return cls(torch.stack([torch.as_tensor(a) for a in arrays]).to(dev), True)

    def keep(self, rows: torch.Tensor) -> None:
        if self.stacked and self.t is not None:
            self.t = self.t[rows]

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Each trial's rows ``idx`` (B, m) -> (B, m, ...)."""
        assert self.t is not None
        if not self.stacked:
            return self.t[idx]
        trial = torch.arange(idx.shape[0], device=idx.device)[:, None]
        return self.t[trial, idx]


@dataclass
class _Trials:
    """The trials still in the batch: their position in the caller's list and their own
    state on the host."""

    index: list[int]
    loggers: list[_Logger]
    epochs: list[int]
    gens: list[torch.Generator] | None
    ended: dict[int, TrialEnd] = field(default_factory=dict)


Progress = tuple[int, int, float, float | None]
"""(trial's index in the batch as given, epochs done, latest loss, latest val loss)."""
Watch = Callable[[list[Progress]], Collection[int]]
"""Told every chunk's progress; answers the trials to stop (cancelled or pruned)."""


def train_together(calls: Sequence[LoopCall], watch: Watch | None = None,
                   on_end: Callable[[int, TrialEnd], None] | None = None) -> list[TrialEnd]:
    """Train the trials (``run_loop``'s calls, one model shape, as ``batch_key`` groups
    them) as one batch; ``on_end(i, end)`` is called as each trial leaves it. Returns every
    trial's end, in order."""
    first = calls[0]
    dev = torch.device(first.device)
    specs = [c.spec for c in calls]
    names = [n for n, _ in first.model.named_parameters()]
    shapes = [p.shape for _, p in first.model.named_parameters()]
    sizes = [p.numel() for _, p in first.model.named_parameters()]
    forward = _forward_for(first.model, dev)
    crit = first.crit
    written = _gradient_for(first.model, crit, forward, dev) if first.y_train.ndim == 2 \
        else None
    flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in c.model.parameters()])
                        for c in calls]).to(dev)  # (B, P)
    step = _make_step(specs, flat)
    xt, yt = _Data.of([c.x_train for c in calls], dev), _Data.of([c.y_train for c in calls], dev)
    xv, yv = _Data.of([c.x_val for c in calls], dev), _Data.of([c.y_val for c in calls], dev)
    assert xt.t is not None and yt.t is not None
    n = first.x_train.shape[0]
    batch = first.spec.batch_size if first.spec.batch_size and first.spec.batch_size < n \
        else None
    live = _Trials(list(range(len(calls))), [_Logger(s) for s in specs],
                   [s.epochs for s in specs],
                   [torch.Generator(device=dev).manual_seed(c.seed) for c in calls]
                   if batch else None)
    clip = first.spec.grad_clip

    def params(f: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, shape, size in zip(names, shapes, sizes, strict=True):
            out[name] = f[:, offset : offset + size].view(f.shape[0], *shape)
            offset += size
        return out

    per_trial = torch.vmap(lambda out, y: crit(out, y))  # (B, N, out) -> (B,)
    shared_y = torch.vmap(lambda out, y: crit(out, y), in_dims=(0, None))

    def losses(f: torch.Tensor, x: torch.Tensor, x_stacked: bool, y: torch.Tensor,
               y_stacked: bool) -> torch.Tensor:
        out = forward(params(f), x, x_stacked)  # (N, in) per trial -> (B, N, out)
        return (per_trial if y_stacked else shared_y)(out, y)  # (B,)

    def apply(f: torch.Tensor, g: torch.Tensor) -> None:
        if clip is not None:  # clip_grad_norm_ per trial, over all its parameters
            norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
            g = g * torch.clamp(clip / (norm + 1e-6), max=1.0)
        step(f, g)

    def train_step(f: torch.Tensor, xb: torch.Tensor, xs: bool, yb: torch.Tensor, ys: bool
                   ) -> torch.Tensor:
        if written is not None:
            with torch.no_grad():
                loss, grads = written(params(f.data), xb, yb, True)
                apply(f.data, torch.cat([grads[n].reshape(f.shape[0], -1) for n in names], 1))
            return loss
        f.grad = None
        loss = losses(f, xb, xs, yb, ys)
        loss.sum().backward()  # each row's gradient is its own trial's: they share nothing
        g = f.grad
        assert g is not None
        with torch.no_grad():
            apply(f.data, g)
        return loss.detach()

    def epoch(f: torch.Tensor) -> torch.Tensor:
        assert xt.t is not None and yt.t is not None
        if batch is None:
            return train_step(f, xt.t, xt.stacked, yt.t, yt.stacked)
        assert live.gens is not None
        perms = torch.stack([torch.randperm(n, generator=g, device=dev) for g in live.gens])
        total = torch.zeros(f.shape[0], device=dev)
        for s in range(0, n, batch):
            idx = perms[:, s : s + batch]  # (B, m)
            total += train_step(f, xt.rows(idx), True, yt.rows(idx), True) * idx.shape[1]
        return total / n

    def val(f: torch.Tensor) -> torch.Tensor | None:
        if xv.t is None or yv.t is None:
            return None
        with torch.no_grad():
            if written is not None:
                return written(params(f.data), xv.t, yv.t, False)[0]
            return losses(f, xv.t, xv.stacked, yv.t, yv.stacked)

    def state_of(row: torch.Tensor) -> dict[str, np.ndarray]:
        values = params(row[None].detach().cpu())
        return {name: values[name][0].numpy().copy() for name in names}

    def end(i: int, e: TrialEnd) -> None:
        live.ended[i] = e
        if on_end is not None:
            on_end(i, e)

    flat.requires_grad_(True)
    done, chunk = 0, 16
    while live.index:
        size = min(chunk, min(live.epochs) - done)
        b = len(live.index)
        loss_buf = torch.empty(b, size, device=dev)
        val_buf = torch.empty(b, size, device=dev) if xv.t is not None else None
        t0 = time.perf_counter()
        for i in range(size):
            if val_buf is not None:
                v = val(flat)
                assert v is not None
                val_buf[:, i] = v
            loss_buf[:, i] = epoch(flat)
        host_loss = loss_buf.cpu().numpy()  # the one sync of this chunk
        host_val = val_buf.cpu().numpy() if val_buf is not None else None
        done += size
        going: list[int] = []  # positions in the batch that go on
        report: list[Progress] = []
        for pos, i in enumerate(live.index):
            logger, last = live.loggers[pos], done >= live.epochs[pos]
            hv = None if host_val is None else host_val[pos]
            try:
                logger.add(done - size, host_loss[pos], hv, last)
            except TrainingError as e:  # diverged: it leaves the batch
                e.extra["history"] = logger.arrays()
                end(i, TrialEnd(error=e))
                continue
            if last:
                epochs, loss, val_loss = logger.arrays()
                end(i, TrialEnd(LoopResult(epochs, loss, val_loss), state_of(flat[pos])))
                continue
            going.append(pos)
            report.append((i, done, float(host_loss[pos, -1]),
                           None if hv is None else float(hv[-1])))
        stop = set(watch(report)) if watch is not None and report else set()
        for pos in [p for p in going if live.index[p] in stop]:
            logger = live.loggers[pos]
            err = Cancelled(f"cancelled at epoch {done}", epoch=done)
            err.extra["history"] = logger.arrays()
            end(live.index[pos], TrialEnd(error=err))
        going = [p for p in going if live.index[p] not in stop]
        if len(going) < b:  # the trials that ended leave the batch
            rows = torch.tensor(going, dtype=torch.long, device=dev)
            flat = flat.detach()[rows].requires_grad_(True)
            step.keep(rows)
            for data in (xt, yt, xv, yv):
                data.keep(rows)
            live.index = [live.index[p] for p in going]
            live.loggers = [live.loggers[p] for p in going]
            live.epochs = [live.epochs[p] for p in going]
            if live.gens is not None:
                live.gens = [live.gens[p] for p in going]
        elapsed = time.perf_counter() - t0
        chunk = max(1, min(8192, int(size * _CHUNK_SECONDS / max(elapsed, 1e-6))))
    return [live.ended[i] for i in range(len(calls))]


def chunked(calls: Sequence[LoopCall]) -> list[list[int]]:
    """The trials (indices into ``calls``) in batches no larger than ``group_size``."""
    size = group_size(calls[0]) if calls else 1
    count = math.ceil(len(calls) / size) if calls else 0
    if count == 0:
        return []
    per = math.ceil(len(calls) / count)  # as even as they go
    return [list(range(s, min(s + per, len(calls)))) for s in range(0, len(calls), per)]
