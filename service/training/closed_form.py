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

import mmap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.training.spec import SGDSpec, TrainingSpec

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


def sufficient_stats(x: np.ndarray, y: np.ndarray, bias: bool, device: str = "cpu") -> Stats:
    """One streaming pass over the rows, block by block on ``device`` in float64: X^T X, X^T Y,
    the column sums and Y^T Y; a second pass measures the least-squares residual only when
    the one-pass formula would lose digits to cancellation. One block is held at a time, and
    the pages of a memory-mapped dataset are let go behind the pass."""
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


def trajectory(
    spec: TrainingSpec,
    theta0: np.ndarray,
    train: Stats,
    val: Stats | None,
    epochs_logged: np.ndarray,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(theta after the last epoch, loss at each logged epoch, val loss at each).

    ``epochs_logged`` are 1-based; epoch t's loss is that of the weights before its step,
    theta_{t-1}, as the plain loop reports it.
    """
    opt = spec.optimizer
    assert isinstance(opt, SGDSpec)
    n, k = train.n, train.k
    scale = 2.0 / (n * k)
    lam_g, q = np.linalg.eigh(train.gram)  # G = Q diag(lam_g) Q^T
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
