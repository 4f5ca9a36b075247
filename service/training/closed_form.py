"""The exact fast path for full-batch SGD on squared loss with a linear model.

For ``loss = mean((A @ theta - Y) ** 2)`` with ``A = [X, 1]``, the gradient is
``(2 / (n k)) (G theta - C)`` with ``G = A^T A`` and ``C = A^T Y``: every epoch costs O(d^2),
whatever the row count. SGD (with weight decay, momentum, dampening, Nesterov) is then a linear
recurrence in the weights; in the eigenbasis of G each direction evolves on its own, so every
epoch's weights and loss follow in closed form, with no loop over epochs at all.

All arithmetic is float64. The loss uses the residual form
``L(theta) = L* + (theta - theta*)^T G (theta - theta*) / (n k)`` with ``L*`` measured on the
rows themselves, so no large terms cancel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.training.spec import SGDSpec, TrainingSpec

log = logging.getLogger(__name__)
_ROWS_PER_BLOCK = 1 << 14  # streaming passes read this many rows at a time
_EPOCHS_PER_BLOCK = 1 << 14


@dataclass
class Stats:
    """Sufficient statistics of squared loss on some rows, in float64."""

    gram: np.ndarray  # (D, D), D = in_features (+1 with bias)
    cross: np.ndarray  # (D, k)
    n: int
    k: int
    theta_ls: np.ndarray  # (D, k): a least-squares solution
    sse_ls: np.ndarray  # (k,): squared error of theta_ls per target, measured on the rows
    ss_tot: np.ndarray  # (k,): sum of (y - mean y)^2 per target
    _eig: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """(eigenvalues, eigenvectors) of the Gram matrix, computed once per statistics:
        trials that share the statistics share it (only the curvature's shift by weight
        decay and the step differ between them)."""
        if self._eig is None:
            self._eig = np.linalg.eigh(self.gram)
        return self._eig

    @property
    def loss_ls(self) -> float:
        return float(self.sse_ls.sum()) / (self.n * self.k)

    def sse(self, theta: np.ndarray) -> np.ndarray:
        """Squared error per target at ``theta`` (D, k), in the residual form."""
        diff = theta - self.theta_ls
        return self.sse_ls + np.einsum("ik,ij,jk->k", diff, self.gram, diff)

    def mse(self, theta: np.ndarray) -> float:
        return float(self.sse(theta).sum()) / (self.n * self.k)

    def r2(self, theta: np.ndarray) -> float | None:
        if (self.ss_tot <= 0).any():
            return None
        return float(np.mean(1.0 - self.sse(theta) / self.ss_tot))


# ---------------------------------------------------------------- trials that share the work


@dataclass
class Trials:
    """What the fits inside one ``trials_together`` block share: the batch's specs, the
    statistics of each set of rows, each trial's trajectory once computed, and the initial
    weights and statistics the batch's trajectories were computed from (``used``)."""

    specs: list[TrainingSpec]
    stats: dict[tuple[Any, ...], Stats] = field(default_factory=dict)
    arrays: list[Any] = field(default_factory=list)  # kept alive: their ids are keys
    paths: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    dumped: set[str] = field(default_factory=set)  # the specs as JSON
    used: tuple[np.ndarray, Stats, Stats | None] | None = None

    def __post_init__(self) -> None:
        self.dumped = {s.model_dump_json() for s in self.specs}


_SHARED: ContextVar[Trials | None] = ContextVar("fitserve_shared_trials", default=None)


@contextmanager
def trials_together(specs: Sequence[TrainingSpec] = ()) -> Iterator[Trials]:
    """Fits run inside this block share their work: the same rows (the same memory-mapped
    array, or the same bytes) with the same bias on the same device are passed over once
    for their sufficient statistics, and from that one eigendecomposition (``Stats.eigh``)
    the trajectories of every trial of ``specs`` are computed together, as arrays with a
    trial axis, when the first of them asks for its own. Each fit then gets its trial's
    numbers (those of the trial alone, within float64 rounding); ``batch_trajectory`` gives
    a trial's without a fit, once one fit of the batch has run."""
    shared = Trials(list(specs))
    token = _SHARED.set(shared)
    try:
        yield shared
    finally:
        _SHARED.reset(token)


def batch_trajectory(shared: Trials, spec: TrainingSpec) -> Trajectory | None:
    """The trajectory of ``spec``, one of the batch's trials, from the initial weights and
    statistics the batch's first fit used (``Trials.used``): None when no fit of the batch
    reached its trajectory or ``spec`` is not in the batch; raises Unstable when its
    recurrence grows (the loop must run it)."""
    if shared.used is None or not shared.specs:
        return None
    theta0, train, val = shared.used
    return _together(shared, spec, theta0, train, val)


def _rows_key(a: np.ndarray) -> tuple[Any, ...]:
    """A memory-mapped dataset (read once for the batch, kept alive) by address: nothing
    is read to name it; rows in memory (a validation split's copies) by their digest."""
    head = (a.shape, a.dtype.str, a.strides)
    if isinstance(a, np.memmap):
        return (*head, "at", a.__array_interface__["data"][0])
    return (*head, "sha", hashlib.blake2b(np.ascontiguousarray(a).data).hexdigest())


BATCHED_FIELDS = {"epochs", "log_every"}
BATCHED_OPTIMIZER = {"lr", "momentum", "dampening", "nesterov", "weight_decay"}


def batch_key(spec: TrainingSpec) -> str | None:
    """Trials whose keys are equal can be computed together: the closed form runs them,
    and they differ at most in the SGD step's settings and the epochs (so they share the
    data, the split, the initial weights and the statistics). None: not such a trial."""
    from service.training.engines import why_not_closed_form

    if spec.batch_size is not None or why_not_closed_form(spec, 1) is not None:
        return None
    values = spec.model_dump(mode="json")
    for name in BATCHED_FIELDS:
        values.pop(name, None)
    values["optimizer"] = {k: v for k, v in values["optimizer"].items()
                           if k not in BATCHED_OPTIMIZER}
    return json.dumps(values, sort_keys=True)


def sufficient_stats(x: np.ndarray, y: np.ndarray, bias: bool, device: str = "cpu") -> Stats:
    """One streaming pass over the rows, block by block on ``device`` in float64: X^T X, X^T Y,
    the column sums and Y^T Y; a second pass measures the least-squares residual only when
    the one-pass formula would lose digits to cancellation. One block is held at a time, and
    the pages of a memory-mapped dataset are let go behind the pass. Inside
    ``trials_together`` the pass over the same rows is made once."""
    shared = _SHARED.get()
    if shared is None:
        return _sufficient_stats(x, y, bias, device)
    key = (_rows_key(x), _rows_key(y), bias, device)
    stats = shared.stats.get(key)
    if stats is None:
        stats = shared.stats[key] = _sufficient_stats(x, y, bias, device)
        shared.arrays += [x, y]
    return stats


def _sufficient_stats(x: np.ndarray, y: np.ndarray, bias: bool, device: str) -> Stats:
    import torch

    dev = torch.device(device)
    f64 = torch.float64
    n, d = x.shape
    k = y.shape[1]
    xx = torch.zeros((d, d), dtype=f64, device=dev)
    xy = torch.zeros((d, k), dtype=f64, device=dev)
    sx = torch.zeros(d, dtype=f64, device=dev)
    sy = torch.zeros(k, dtype=f64, device=dev)
    yy = torch.zeros(k, dtype=f64, device=dev)
    for s in range(0, n, _ROWS_PER_BLOCK):
        xb = torch.as_tensor(x[s : s + _ROWS_PER_BLOCK]).to(dev, f64)
        yb = torch.as_tensor(y[s : s + _ROWS_PER_BLOCK]).to(dev, f64)
        xx += xb.T @ xb
        xy += xb.T @ yb
        sx += xb.sum(0)
        sy += yb.sum(0)
        yy += (yb * yb).sum(0)
        drop_pages(x, s, s + _ROWS_PER_BLOCK)
        drop_pages(y, s, s + _ROWS_PER_BLOCK)
    xx_np, xy_np, sx_np, sy_np, yy_np = (t.cpu().numpy() for t in (xx, xy, sx, sy, yy))
    if bias:  # A = [X, 1]
        gram = np.block([[xx_np, sx_np[:, None]], [sx_np[None, :], np.array([[float(n)]])]])
        cross = np.vstack([xy_np, sy_np[None, :]])
    else:
        gram, cross = xx_np, xy_np
    theta_ls = np.linalg.lstsq(gram, cross, rcond=None)[0]  # (D, k)
    sse = yy_np - 2 * np.sum(theta_ls * cross, axis=0) + np.sum(theta_ls * (gram @ theta_ls),
                                                                axis=0)
    if (sse <= 1e-8 * yy_np).any():  # a near-exact fit: measure the residual instead
        sse = _residual_sse(x, y, theta_ls, bias, dev)
    ss_tot = yy_np - sy_np**2 / n
    return Stats(gram, cross, n, k, theta_ls, np.maximum(sse, 0.0), ss_tot)


def drop_pages(a: np.ndarray, start: int, stop: int) -> None:
    """Let the kernel reclaim rows [start, stop) of a memory-mapped array (they are read
    again from the page cache if touched later); a no-op for arrays in memory."""
    if not isinstance(a, np.memmap):
        return
    mm = getattr(a, "_mmap", None)
    if mm is None or not a.flags.c_contiguous or not hasattr(mmap, "MADV_DONTNEED"):
        return
    row = a.strides[0]
    first = a.offset % mmap.ALLOCATIONGRANULARITY + start * row  # byte offset in the mapping
    last = min(len(mm), first + (stop - start) * row)
    first -= first % mmap.PAGESIZE
    last -= last % mmap.PAGESIZE
    if last > first:
        mm.madvise(mmap.MADV_DONTNEED, first, last - first)


def _residual_sse(x: np.ndarray, y: np.ndarray, theta: np.ndarray, bias: bool, dev
                  ) -> np.ndarray:
    import torch

    d = x.shape[1]
    w = torch.as_tensor(theta[:d], device=dev)
    b = torch.as_tensor(theta[d], device=dev) if bias else None
    sse = torch.zeros(y.shape[1], dtype=torch.float64, device=dev)
    for s in range(0, x.shape[0], _ROWS_PER_BLOCK):
        r = torch.as_tensor(x[s : s + _ROWS_PER_BLOCK]).to(dev, torch.float64) @ w
        if b is not None:
            r += b
        r -= torch.as_tensor(y[s : s + _ROWS_PER_BLOCK]).to(dev, torch.float64)
        sse += (r * r).sum(0)
    return sse.cpu().numpy()


class Unstable(Exception):
    """The recurrence grows: the plain loop must run, to fail at the very epoch it fails."""


Trajectory = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def trajectory(
    spec: TrainingSpec,
    theta0: np.ndarray,
    train: Stats,
    val: Stats | None,
    epochs_logged: np.ndarray,
    should_stop: Callable[[], bool] | None = None,
) -> Trajectory:
    """(theta after the last epoch, loss at each logged epoch, val loss at each).

    ``epochs_logged`` are 1-based; epoch t's loss is that of the weights before its step,
    theta_{t-1}, as the plain loop reports it. Inside ``trials_together`` a trial of the
    batch gets its part of the batch's trajectories."""
    shared = _SHARED.get()
    if shared is not None and shared.specs:
        got = _together(shared, spec, theta0, train, val)
        if got is not None:
            if should_stop is not None and should_stop():
                from service.errors import Cancelled

                raise Cancelled("cancelled before its first epoch", epoch=0)
            theta, losses, val_losses = got
            if len(losses) != len(epochs_logged):  # not this spec's epochs: alone
                return _trajectory(spec, theta0, train, val, epochs_logged, should_stop)
            return theta.copy(), losses.copy(), None if val_losses is None else \
                val_losses.copy()
    return _trajectory(spec, theta0, train, val, epochs_logged, should_stop)


def _trajectory(
    spec: TrainingSpec,
    theta0: np.ndarray,
    train: Stats,
    val: Stats | None,
    epochs_logged: np.ndarray,
    should_stop: Callable[[], bool] | None = None,
) -> Trajectory:
    opt = spec.optimizer
    assert isinstance(opt, SGDSpec)
    n, k = train.n, train.k
    scale = 2.0 / (n * k)
    lam_g, q = train.eigh()  # G = Q diag(lam_g) Q^T
    lam_g = np.clip(lam_g, 0.0, None)
    a = scale * lam_g + opt.weight_decay  # (D,): curvature of each direction
    c = scale * (q.T @ train.cross)  # (D, k)
    z0 = q.T @ theta0  # (D, k)
    flat = a <= 1e-12 * max(float(a.max()), 1e-300)  # no curvature: the gradient is 0 there
    lr = opt.lr

    steps = np.concatenate([epochs_logged - 1, [spec.epochs]]).astype(np.int64)
    if opt.momentum == 0:
        r = 1.0 - lr * a
        if (np.abs(r) > 1.0 + 1e-12).any():
            raise Unstable("the learning rate exceeds 2 / curvature in some direction")
        path: _Path = _PlainPath(a, c, z0, flat, lr)
    else:
        path = _MomentumPath(a, c, z0, flat, lr, opt, int(steps.max()))
    losses, val_losses, theta_final = [], [], theta0
    for s in range(0, len(steps), _EPOCHS_PER_BLOCK):
        block = steps[s : s + _EPOCHS_PER_BLOCK]
        thetas = np.einsum("ij,tjk->tik", q, path.at(block))  # (M, D, k)
        if s + len(block) == len(steps):  # the last entry is the final weights
            theta_final, thetas = thetas[-1], thetas[:-1]
        losses.append(_loss(thetas, train))
        if val is not None:
            val_losses.append(_loss(thetas, val))
        if should_stop is not None and should_stop():
            from service.errors import Cancelled

            done = int(block[-1])
            raise Cancelled(f"cancelled at epoch {done}", epoch=done)
    return (
        theta_final,
        np.concatenate(losses),
        np.concatenate(val_losses) if val is not None else None,
    )


class _Path:
    def at(self, steps: np.ndarray) -> np.ndarray:
        """z after each number of steps (ascending, non-negative): (M, D, k)."""
        raise NotImplementedError


class _PlainPath(_Path):
    """z_t = r^t z_0 + c (1 - r^t) / a with r = 1 - lr a, per direction."""

    def __init__(self, a: np.ndarray, c: np.ndarray, z0: np.ndarray, flat: np.ndarray,
                 lr: float) -> None:
        self.a, self.c, self.z0, self.flat, self.lr = a, c, z0, flat, lr
        self.r = 1.0 - lr * a

    def at(self, steps: np.ndarray) -> np.ndarray:
        t = steps[:, None].astype(np.float64)  # (M, 1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            # r^t: exp(t log r) where r > 0 (vectorised, far cheaper than pow), else pow
            pos = self.r > 0
            rt = np.empty((len(steps), len(self.r)))  # (M, D)
            rt[:, pos] = np.exp(t * np.log(self.r[pos])[None, :])
            rt[:, ~pos] = np.power(self.r[None, ~pos], t)
            safe_a = np.where(self.flat, 1.0, self.a)[None, :]
            geom = np.where(self.flat[None, :], self.lr * t, (1.0 - rt) / safe_a)
        return rt[:, :, None] * self.z0[None] + geom[:, :, None] * self.c[None]


class _MomentumPath(_Path):
    """PyTorch's momentum SGD as a 2-state affine recurrence per direction.

    Step 1: b_1 = g_1. Step t >= 2: b_t = mu b_{t-1} + (1 - tau) g_t. The update is b_t, or
    g_t + mu b_t with Nesterov. With s_t = (z_t, b_{t-1}) for t >= 2, s_{t+1} = T s_t + u whose
    fixed point is (c / a, 0); so after m >= 1 steps, s = s* + T^(m-1) (s_2 - s*).
    """

    def __init__(self, a: np.ndarray, c: np.ndarray, z0: np.ndarray, flat: np.ndarray,
                 lr: float, opt: SGDSpec, max_steps: int) -> None:
        if flat.any():
            raise Unstable("a direction without curvature (singular features) under momentum")
        mu, w = opt.momentum, 1.0 - opt.dampening
        one = np.ones_like(a)
        if opt.nesterov:  # z' = z - lr (a z - c) - lr mu (mu b + w (a z - c))
            top = [1 - lr * a * (1 + mu * w), -lr * mu * mu * one]
            first = 1.0 + mu
        else:  # z' = z - lr (mu b + w (a z - c))
            top = [1 - lr * w * a, -lr * mu * one]
            first = 1.0
        t_mat = np.stack([np.stack(top, -1), np.stack([w * a, mu * one], -1)], -2)  # (D, 2, 2)
        if np.abs(np.linalg.eigvals(t_mat)).max() > 1.0 + 1e-12:
            raise Unstable("the momentum recurrence grows")
        self.z0 = z0
        self.z_star = c / a[:, None]  # (D, k)
        g1 = a[:, None] * z0 - c
        z2 = z0 - lr * first * g1
        self.base = np.stack([z2 - self.z_star, g1], axis=1)  # T^start (s_2 - s*): (D, 2, k)
        self.start = 0
        self.block = max(1, min(_EPOCHS_PER_BLOCK, max_steps))
        self.table = _power_table(t_mat, self.block)  # T^0 .. T^(block-1)
        self.jump = self.table[-1] @ t_mat  # T^block

    def at(self, steps: np.ndarray) -> np.ndarray:
        out = np.empty((len(steps),) + self.z0.shape)
        out[steps == 0] = self.z0
        idx = np.nonzero(steps >= 1)[0]
        p = steps[idx] - 1
        while len(p):
            while p[0] >= self.start + self.block:
                self.base = np.einsum("dij,djk->dik", self.jump, self.base)
                self.start += self.block
            here = p < self.start + self.block
            s = np.einsum("mdij,djk->mdik", self.table[p[here] - self.start], self.base)
            out[idx[here]] = self.z_star[None] + s[:, :, 0, :]
            idx, p = idx[~here], p[~here]
        return out


def _power_table(t_mat: np.ndarray, count: int) -> np.ndarray:
    """T^0 .. T^(count-1) for a stack of 2x2 matrices, by doubling."""
    eye = np.broadcast_to(np.eye(2), t_mat.shape).copy()
    table = np.empty((count,) + t_mat.shape)
    table[0] = eye
    filled, power = 1, t_mat.copy()  # power = T^filled
    while filled < count:
        m = min(filled, count - filled)
        table[filled : filled + m] = table[:m] @ power
        filled += m
        power = power @ power
    return table


def _loss(thetas: np.ndarray, stats: Stats) -> np.ndarray:
    """Mean squared error for each theta in (T, D, k), from the residual form."""
    diff = thetas - stats.theta_ls[None]  # (T, D, k)
    quad = np.einsum("tik,ij,tjk->t", diff, stats.gram, diff)
    return (float(stats.sse_ls.sum()) + quad) / (stats.n * stats.k)


# ---------------------------------------------------------------- a batch's trajectories

_BATCH_ELEMENTS = 1 << 18
"""Float64s of a chunk's deviations (trials x directions x targets x steps) at a time: the
trials go in chunks whose arrays stay in the cache (2 MB)."""
_POWER_BLOCK = 128
"""b^t = b^(K hi) b^lo with t = K hi + lo: two small tables of powers per base, and one
product (or one small matrix product) per step."""


def _together(shared: Trials, spec: TrainingSpec, theta0: np.ndarray, train: Stats,
              val: Stats | None) -> Trajectory | None:
    """This trial's part of the batch's trajectories (computed on the first ask), or None
    when it is not in the batch; raises Unstable when its recurrence grows."""
    dumped = spec.model_dump_json()
    key = (id(train), id(val), theta0.tobytes(), dumped)
    if key not in shared.paths:
        if dumped not in shared.dumped:
            return None
        shared.used = (theta0, train, val)
        try:  # the growing recurrences of unstable trials overflow: they are dropped
            with np.errstate(all="ignore"):
                _compute_together(shared, theta0, train, val)
        except Exception:  # never a batch's failure: each trial then runs alone
            log.exception("the batch's trajectories failed; its trials run alone")
            shared.specs = []
            return None
    got = shared.paths.get(key)
    if isinstance(got, Unstable):
        raise Unstable(str(got))
    return got


def _compute_together(shared: Trials, theta0: np.ndarray, train: Stats,
                      val: Stats | None) -> None:
    """Every SGD trial of the batch from one eigendecomposition, grouped by the epochs they
    log (and plain or momentum SGD), each group as arrays with a trial axis."""
    from service.training.fit import logged_epochs

    head = (id(train), id(val), theta0.tobytes())
    groups: dict[tuple[Any, ...], list[tuple[TrainingSpec, str]]] = {}
    for spec in shared.specs:
        dumped = spec.model_dump_json()
        if isinstance(spec.optimizer, SGDSpec) and (*head, dumped) not in shared.paths:
            # the epochs logged follow from these two (fit.py's ``logged_epochs``)
            groups.setdefault((spec.optimizer.momentum == 0, spec.epochs, spec.log_every),
                              []).append((spec, dumped))
    lam_raw, q = train.eigh()
    lam_g = np.clip(lam_raw, 0.0, None)
    scale = 2.0 / (train.n * train.k)
    c = scale * (q.T @ train.cross)  # (D, k)
    z0 = q.T @ theta0  # (D, k)
    z_ls = q.T @ train.theta_ls  # (D, k): the least-squares weights in the eigenbasis
    d, k = z0.shape
    # the training loss in the eigenbasis, where G is diagonal: the residual form of
    # ``_loss`` without going back to the weights at every epoch
    weights = np.repeat(lam_raw, k)  # (D k,)
    for (plain, _, _), members in groups.items():
        steps = np.concatenate([logged_epochs(members[0][0]) - 1,
                                [members[0][0].epochs]]).astype(np.int64)
        chunk = max(1, _BATCH_ELEMENTS // (len(steps) * d * k))
        for i in range(0, len(members), chunk):
            part = members[i : i + chunk]
            sgd = [s.optimizer for s, _ in part if isinstance(s.optimizer, SGDSpec)]
            lr = np.array([o.lr for o in sgd])
            a = scale * lam_g[None, :] + np.array([o.weight_decay for o in sgd])[:, None]
            flat = a <= 1e-12 * np.maximum(a.max(axis=1, keepdims=True), 1e-300)
            paths = (_PlainPaths(a, c, z0, flat, lr) if plain
                     else _MomentumPaths(a, c, z0, flat, lr, sgd, int(steps.max())))
            dev = paths.deviation(steps, z_ls)  # (B, D, k, M): z - z_ls at each step
            sq = dev[..., :-1] * dev[..., :-1]
            quad = weights @ sq.reshape(len(part), d * k, -1)  # (B, M - 1)
            all_losses = (float(train.sse_ls.sum()) + quad) / (train.n * train.k)
            finals = np.einsum("ij,bjk->bik", q, dev[..., -1] + z_ls)  # (B, D, k)
            for b, (_, dumped) in enumerate(part):
                key = (*head, dumped)
                if paths.unstable[b] is not None:
                    shared.paths[key] = Unstable(paths.unstable[b])
                    continue
                losses = all_losses[b]
                if not np.isfinite(losses).all():
                    shared.paths[key] = Unstable("non-finite loss in the closed form")
                    continue
                val_losses = None
                if val is not None:  # (M - 1, D, k): back to the weights
                    thetas = np.einsum("ij,jkm->mik", q, dev[b, ..., :-1] + z_ls[..., None])
                    val_losses = _loss(thetas, val)
                shared.paths[key] = (finals[b], losses, val_losses)


def _powers(log_base: np.ndarray, zero: np.ndarray, top: int, block: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(lows, highs): b^lo for lo < ``block`` and b^(block hi) for block hi <= ``top``, on a
    new last axis, for every base b = exp(``log_base``) (``zero``: b is 0; 0^0 = 1)."""
    lo = np.arange(block, dtype=np.float64)
    hi = np.arange(top // block + 1, dtype=np.float64) * block
    lows = np.exp(lo * log_base[..., None])
    highs = np.exp(hi * log_base[..., None])
    if zero.any():
        lows = np.where(zero[..., None] & (lo > 0), 0.0, lows)
        highs = np.where(zero[..., None] & (hi > 0), 0.0, highs)
    return lows, highs


class _PlainPaths:
    """``_PlainPath`` for a batch: r = 1 - lr a per trial and direction, (B, D)."""

    def __init__(self, a: np.ndarray, c: np.ndarray, z0: np.ndarray, flat: np.ndarray,
                 lr: np.ndarray) -> None:
        self.a, self.c, self.z0, self.flat, self.lr = a, c, z0, flat, lr
        self.r = 1.0 - lr[:, None] * a
        self.unstable = ["the learning rate exceeds 2 / curvature in some direction"
                         if (np.abs(r) > 1.0 + 1e-12).any() else None for r in self.r]

    def deviation(self, steps: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """z - ``ref`` after each number of steps: (B, D, k, M)."""
        t = steps.astype(np.float64)  # (M,)
        top = int(steps.max(initial=0))
        # r^t = |r|^t (-1)^t where r < 0, from tables of powers (far cheaper than pow)
        magnitude = np.abs(self.r)
        lows, highs = _powers(np.log(np.where(magnitude > 0, magnitude, 1.0)),
                              magnitude == 0, top, _POWER_BLOCK)
        hi, lo = np.divmod(steps, _POWER_BLOCK)
        rt = highs[:, :, hi] * lows[:, :, lo]  # (B, D, M)
        odd = (steps % 2 == 1)[None, None, :] & (self.r < 0)[:, :, None]
        rt = np.where(odd, -rt, rt)
        safe_a = np.where(self.flat, 1.0, self.a)[:, :, None]
        geom = np.where(self.flat[:, :, None], self.lr[:, None, None] * t,
                        (1.0 - rt) / safe_a)  # (B, D, M)
        return (rt[:, :, None, :] * self.z0[None, :, :, None]
                + geom[:, :, None, :] * self.c[None, :, :, None] - ref[None, :, :, None])


class _MomentumPaths:
    """``_MomentumPath`` for a batch (each trial's momentum, dampening and Nesterov may
    differ), through the eigendecomposition of each trial's 2x2 recurrence per direction:
    T = P diag(mu) P^-1, so z after m >= 1 steps is z* + Re(sum_j alpha_j mu_j^(m-1)), one
    array expression for every trial and epoch. A trial whose P is ill-conditioned (a
    recurrence near its critically damped point, where the eigenvectors merge) is computed
    by ``_MomentumPath`` itself, exactly as alone."""

    _MAX_COND = 1e6

    def __init__(self, a: np.ndarray, c: np.ndarray, z0: np.ndarray, flat: np.ndarray,
                 lr: np.ndarray, opts: list[SGDSpec], max_steps: int) -> None:
        mu = np.array([o.momentum for o in opts])[:, None]  # (B, 1)
        w = 1.0 - np.array([o.dampening for o in opts])[:, None]
        nesterov = np.array([o.nesterov for o in opts])[:, None]
        lr_ = lr[:, None]
        one = np.ones_like(a)
        top0 = np.where(nesterov, 1 - lr_ * a * (1 + mu * w), 1 - lr_ * w * a)
        top1 = np.where(nesterov, -lr_ * mu * mu * one, -lr_ * mu * one)
        first = np.where(nesterov, 1.0 + mu, 1.0)  # (B, 1)
        t_mat = np.stack([np.stack([top0, top1], -1), np.stack([w * a, mu * one], -1)], -2)
        eig, vecs = np.linalg.eig(t_mat)  # (B, D, 2), (B, D, 2, 2)
        grows = np.abs(eig).reshape(len(opts), -1).max(axis=1)
        self.unstable = [
            "a direction without curvature (singular features) under momentum"
            if flat[b].any() else "the momentum recurrence grows" if grows[b] > 1.0 + 1e-12
            else None for b in range(len(opts))]
        safe_a = np.where(flat, 1.0, a)
        self.z0 = z0
        self.z_star = c[None] / safe_a[:, :, None]  # (B, D, k)
        g1 = safe_a[:, :, None] * z0[None] - c[None]
        z2 = z0[None] - (lr_ * first)[:, :, None] * g1
        base = np.stack([z2 - self.z_star, g1], axis=2)  # (B, D, 2, k): s_2 - s*
        cond = np.linalg.cond(vecs).reshape(len(opts), -1).max(axis=1)
        self.alone = {b: _MomentumPath(a[b], c, z0, flat[b], float(lr[b]), opts[b], max_steps)
                      for b in range(len(opts)) if self.unstable[b] is None
                      and not cond[b] < self._MAX_COND}
        ok = np.isfinite(cond) & (cond < self._MAX_COND)
        vecs = np.where(ok[:, None, None, None], vecs, np.eye(2))
        v = np.linalg.solve(vecs, base.astype(complex))  # P^-1 (s_2 - s*)
        self.alpha = vecs[:, :, 0, :, None] * v  # (B, D, 2, k)
        self.log_eig = np.log(np.where(eig == 0, 1.0, eig))  # (B, D, 2)
        self.zero_eig = eig == 0

    def deviation(self, steps: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """z - ``ref`` after each number of steps: (B, D, k, M)."""
        m = np.maximum(steps - 1, 0)  # (M,)
        top = int(m.max(initial=0))
        lows, highs = _powers(self.log_eig, self.zero_eig, top, _POWER_BLOCK)
        low_a = lows[:, :, :, None, :] * self.alpha[..., None]  # (B, D, 2, k, K)
        b_, d, _, k, block = low_a.shape
        if top + 1 > 2 * len(m):  # few steps logged out of many: those steps alone
            hi, lo = np.divmod(m, block)
            s = (highs[:, :, :, None, hi] * low_a[..., lo]).real.sum(axis=2)  # (B, D, k, M)
        else:  # every step up to the last (the usual log_every 1): Re(sum_j h_j l_j) as
            # one small real matrix product per trial and direction, [Re h, -Im h] [Re l;
            # Im l], over the tables: (H, 4) @ (4, k K) -> every step's value at once
            h_mat = np.concatenate([highs.real, -highs.imag], axis=2).transpose(0, 1, 3, 2)
            l_mat = np.concatenate([low_a.real, low_a.imag], axis=2).reshape(
                b_, d, 4, k * block)
            every = (h_mat @ l_mat).reshape(b_, d, -1, k, block).transpose(0, 1, 3, 2, 4)
            every = every.reshape(b_, d, k, -1)  # (B, D, k, H K): step m at [..., m]
            moved = np.nonzero(steps >= 1)[0]
            if len(moved) and (np.diff(moved) == 1).all() and (np.diff(m[moved]) == 1).all():
                # the usual steps 0, 1, ..., E: a slice each, no gathered copy
                out = np.empty((b_, d, k, len(steps)))
                lo, first = int(moved[0]), int(m[moved[0]])
                np.add(every[..., first : first + len(moved)],
                       (self.z_star - ref[None])[..., None], out=out[..., lo : lo + len(moved)])
                out[..., steps == 0] = (self.z0 - ref)[None, ..., None]
                for b, path in self.alone.items():
                    out[b] = path.at(steps).transpose(1, 2, 0) - ref[..., None]
                return out
            s = every[..., m]
        out = s + (self.z_star - ref[None])[..., None]
        out[..., steps == 0] = (self.z0 - ref)[None, ..., None]
        for b, path in self.alone.items():
            out[b] = path.at(steps).transpose(1, 2, 0) - ref[..., None]
        return out
