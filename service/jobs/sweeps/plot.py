"""A sweep's figure: the objective against the trial number (with the best so far), and
against each searched field. Matplotlib's Agg canvas, never pyplot (these run in worker
threads of the API); blocking: call it off the event loop."""

from __future__ import annotations

import io
import json
import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from service.jobs.sweeps.space import Dimension
from service.store.sweeps import TrialState
from service.store.tables import SweepRow

_COLUMNS = 3


def sweep_plot_png(sweep: SweepRow, trials: list[TrialState]) -> bytes:
    dims = [Dimension.from_json(d) for d in sweep.search_space]
    panels = 1 + len(dims)
    cols = min(_COLUMNS, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    done = [t for t in trials if t.trial.status == "succeeded" and t.trial.value is not None]
    pruned = [t for t in trials if t.trial.status == "pruned" and t.trial.intermediate]
    label = f"{sweep.objective} ({sweep.direction})"
    fig.suptitle(f"sweep {sweep.id}: {len(done)} of {sweep.max_trials} trials scored")

    ax = fig.add_subplot(rows, cols, 1)
    if done:
        numbers = np.array([t.number for t in done])
        values = np.array([float(t.trial.value or 0.0) for t in done])
        ax.plot(numbers, values, "o", color="tab:blue", label="trial")
        best = (np.minimum if sweep.direction == "minimize" else np.maximum).accumulate(values)
        ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    if pruned:
        ax.plot([t.number for t in pruned], [_last_loss(t) for t in pruned], "x",
                color="0.55", label="pruned (its last rung's loss)")
    _log_if_positive(ax, [float(t.trial.value or 0.0) for t in done])
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    if done or pruned:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no trial has ended yet", ha="center", va="center",
                transform=ax.transAxes)

    for i, dim in enumerate(dims, start=2):
        ax = fig.add_subplot(rows, cols, i)
        scores = [float(t.trial.value or 0.0) for t in done]
        xs: list[float]
        if dim.kind == "choice":
            names = [_short(c) for c in dim.choices]
            index = {json.dumps(c, sort_keys=True): k for k, c in enumerate(dim.choices)}
            xs = [float(index.get(json.dumps(t.trial.params.get(dim.path), sort_keys=True),
                                  -1)) for t in done]
            ax.plot(xs, scores, "o", color="tab:blue")
            ax.set_xticks(range(len(names)), names, rotation=30, fontsize="small")
        else:
            xs = [float(t.trial.params.get(dim.path, math.nan)) for t in done]
            ax.plot(xs, scores, "o", color="tab:blue")
            if dim.kind == "log_uniform":
                ax.set_xscale("log")
        _log_if_positive(ax, scores)
        ax.set_xlabel(dim.path)
        ax.set_ylabel(sweep.objective)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _last_loss(t: TrialState) -> float:
    last = max(t.trial.intermediate, key=int)
    return abs(float(t.trial.intermediate[last]))


def _log_if_positive(ax: Axes, values: list[float]) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) > 1 and min(finite) > 0 and max(finite) / min(finite) > 100:
        ax.set_yscale("log")


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 12 else text[:11] + "\u2026"
