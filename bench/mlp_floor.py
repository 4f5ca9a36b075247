"""``python -m bench.mlp_floor``: how far batching can take the mlp sweep row on this CPU.

The row (bench/sweeps.py) trains 32 trials of an mlp (1 input, 32 tanh units, 1 output,
2 000 rows, 500 epochs, Adam) as one stacked tensor program against 32 separate jobs. The
trials share no arithmetic: each has its own weights, so every trial still computes its
own ``2 000 x 32`` activations every epoch. Batching removes the per-operation overhead of
the plain loop, none of the arithmetic. This prints, per trial and epoch, in one process
with one thread:

- the plain autograd loop (what a job alone runs: ``nn.Sequential``, ``MSELoss``, Adam);
- the stacked forward and backward of a batch (the step left out, so a lower bound of the
  batch's own cost), for 4 to 32 trials;
- ``tanh`` alone over one trial's activations, torch's kernel and numpy's (torch's float32
  ``tanh`` was 7 to 13 times numpy's on two AVX-512 machines, as slow as numpy's on an AVX2
  one, and 3 to 6 times its own ``sigmoid`` on all three);
- fitserve's own batch (``training/batched.py``'s ``train_together``, whose mlp forward and
  backward are written out: a third of autograd's passes, ``tanh`` from the vectorized
  ``sigmoid``), for 8 and 16 trials of the row's job, prepared by ``fit`` as a worker does;
- with ``--compile``: the stacked forward, backward and SGD step written out and compiled
  by ``torch.compile`` (inductor's C++ kernels: each pass over the activations fused), its
  compile time (cold, or from inductor's cache on disk) and its time per trial and epoch.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

N, H = 2000, 32


def _per_epoch(fn: Callable[[int], None], epochs: int) -> float:
    fn(5)  # warm-up
    t0 = time.perf_counter()
    fn(epochs)
    return (time.perf_counter() - t0) / epochs


def plain_loop(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    model = nn.Sequential(nn.Linear(1, H), nn.Tanh(), nn.Linear(H, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    crit = nn.MSELoss()

    def run(n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            crit(model(x), y).backward()
            opt.step()

    return _per_epoch(run, epochs)


def stacked(x: torch.Tensor, y: torch.Tensor, trials: int, epochs: int) -> float:
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(trials, 1, H, generator=g, requires_grad=True)
    b1 = torch.randn(trials, 1, H, generator=g, requires_grad=True)
    w2 = torch.randn(trials, H, 1, generator=g, requires_grad=True)
    b2 = torch.randn(trials, 1, 1, generator=g, requires_grad=True)

    def run(n: int) -> None:
        for _ in range(n):
            for p in (w1, b1, w2, b2):
                p.grad = None
            h = torch.tanh(x * w1 + b1)  # (B, N, H): a broadcast product, as batched.py
            out = torch.baddbmm(b2, h, w2)  # (B, N, 1)
            ((out - y) ** 2).mean(dim=(1, 2)).sum().backward()

    return _per_epoch(run, epochs) / trials


def tanh_alone(epochs: int) -> float:
    z = torch.randn(N, H)

    def run(n: int) -> None:
        for _ in range(n):
            torch.tanh(z)

    return _per_epoch(run, epochs)


def numpy_tanh_alone(epochs: int) -> float:
    z = torch.randn(N, H).numpy()

    def run(n: int) -> None:
        for _ in range(n):
            np.tanh(z)

    return _per_epoch(run, epochs)


def compiled(x: torch.Tensor, y: torch.Tensor, trials: int,
             epochs: int) -> tuple[float, float]:
    """(compile seconds, seconds per trial and epoch) of one fused SGD step of a batch."""
    g = torch.Generator().manual_seed(0)
    params = (torch.randn(trials, 1, H, generator=g), torch.randn(trials, 1, H, generator=g),
              torch.randn(trials, H, 1, generator=g), torch.randn(trials, 1, 1, generator=g))
    lr = torch.full((trials, 1, 1), 0.01)

    def step(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
             lr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = torch.tanh(x * w1 + b1)
        d = 2 * (torch.baddbmm(b2, h, w2) - y) / N  # d loss / d out, each trial's MSE
        dh = (d @ w2.transpose(1, 2)) * (1 - h * h)
        return (w1 - lr * (x * dh).sum(1, keepdim=True), b1 - lr * dh.sum(1, keepdim=True),
                w2 - lr * (h.transpose(1, 2) @ d), b2 - lr * d.sum(1, keepdim=True))

    fused = torch.compile(step, dynamic=False)
    t0 = time.perf_counter()
    params = fused(*params, lr)
    compile_s = time.perf_counter() - t0

    def run(n: int) -> None:
        nonlocal params
        for _ in range(n):
            params = fused(*params, lr)

    return compile_s, _per_epoch(run, epochs) / trials


def fitserve_batch(x: torch.Tensor, y: torch.Tensor, trials: int, epochs: int) -> float:
    """Seconds per trial and epoch of ``train_together`` (best of three) on the row's
    trials: Adam, learning rates and seeds varied, as the sweep's."""
    from service.training import batched
    from service.training.fit import fit
    from service.training.spec import TrainingSpec

    calls = []
    for i, lr in enumerate(np.geomspace(1e-3, 3e-2, trials)):
        spec = TrainingSpec.model_validate({
            "model": {"kind": "mlp", "hidden": [H]}, "epochs": epochs, "seed": i % 4,
            "optimizer": {"name": "adam", "lr": float(lr)}})
        with batched.collecting() as box:
            try:
                fit(spec, x.numpy(), y.numpy(), "cpu")
            except batched.Collected:
                pass
        calls.append(box.call)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        batched.train_together(calls)
        best = min(best, time.perf_counter() - t0)
    return best / trials / epochs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--compile", action="store_true",
                   help="also the fused step of 32 trials (torch.compile; 20 s cold)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, 1, generator=g) * 4 - 2
    y = torch.sin(2 * x)
    plain = plain_loop(x, y, args.epochs)
    print(f"plain autograd loop, one trial:       {plain * 1e6:8.0f} us per epoch")
    for trials in (4, 8, 16, 32):
        s = stacked(x, y, trials, args.epochs)
        print(f"stacked forward+backward, {trials:2d} trials: {s * 1e6:8.0f} us per trial and "
              f"epoch ({s / plain:.2f} of the plain loop)")
    for trials in (8, 16):
        s = fitserve_batch(x, y, trials, args.epochs)
        print(f"fitserve's batch, {trials:2d} trials:         {s * 1e6:8.0f} us per trial and "
              f"epoch ({s / plain:.2f} of the plain loop)")
    t = tanh_alone(args.epochs)
    print(f"torch's tanh over one trial's activations:   {t * 1e6:8.0f} us per epoch "
          f"({t / plain:.2f} of the plain loop: what a program calling it pays)")
    t = numpy_tanh_alone(args.epochs)
    print(f"numpy's tanh over the same:          {t * 1e6:8.0f} us per epoch "
          f"({t / plain:.2f} of the plain loop)")
    if args.compile:
        compile_s, c = compiled(x, y, 32, args.epochs)
        print(f"fused SGD step, 32 trials (compiled): {c * 1e6:8.0f} us per trial and epoch "
              f"({c / plain:.2f} of the plain loop), after {compile_s:.1f} s of compiling")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
