"""``fitserve sweep``: a hyperparameter search from the shell, with a progress bar and the
best trials as a table; ``fitserve sweeps`` lists them (show, cancel).

A searched option takes a range, a list or one value:

    --lr 1e-4:1e-1:log     log-uniform between the two (``:log:8``: 8 grid points)
    --momentum 0:0.9       uniform (``0:0.9:4``: 4 grid points)
    --epochs 100:10000     whole numbers (for epochs)
    --momentum 0,0.9       a choice
    --lr 0.01              fixed: the base job's value
    --param 'model.hidden=[[16],[32,32]]'   any job field: a JSON list is a choice, a
                                             JSON object a dimension as the API takes it
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from service.cli.client import (
    API_KEY,
    URL,
    DataArgument,
    TargetOption,
    check_data,
    connect,
    fmt,
    line,
    short_when,
)
from service.cli.tables import Column, print_table

SEARCHED = {"lr": "optimizer.lr", "momentum": "optimizer.momentum",
            "weight_decay": "optimizer.weight_decay", "epochs": "epochs"}
INTEGER = {"epochs"}


def parse_option(path: str, text: str) -> tuple[Any, dict[str, Any] | None]:
    """``(fixed value, None)`` or ``(None, dimension)`` for one searched option."""
    whole = path in INTEGER

    def number(v: str) -> float | int:
        try:
            return int(v) if whole else float(v)
        except ValueError:
            raise typer.BadParameter(f"{v!r} is not a {'whole ' if whole else ''}number "
                                     f"(in {text!r})", param_hint=path) from None

    if ":" in text:
        parts = text.split(":")
        lo, hi, rest = number(parts[0]), number(parts[1]), parts[2:]
        log = bool(rest) and rest[0] == "log"
        rest = rest[1:] if log else rest
        kind = "int" if whole else "log_uniform" if log else "uniform"
        dim: dict[str, Any] = {kind: [lo, hi]}
        if rest:
            if not rest[0].isdigit() or len(rest) > 1:
                raise typer.BadParameter(f"{text!r}: a range is lo:hi, lo:hi:log, lo:hi:STEPS "
                                         "or lo:hi:log:STEPS", param_hint=path)
            dim["steps"] = int(rest[0])
        return None, dim
    if "," in text:
        return None, {"choice": [number(v) for v in text.split(",") if v.strip()]}
    return number(text), None


def parse_param(text: str) -> tuple[str, dict[str, Any]]:
    """``PATH=SPEC`` of ``--param``: SPEC a JSON list (a choice), a JSON object (a
    dimension as the API takes it) or the ``lo:hi[:log][:steps]`` form."""
    path, sep, spec = text.partition("=")
    if not sep or not path:
        raise typer.BadParameter(f"give PATH=SPEC, e.g. 'model.hidden=[[16],[32,32]]' (got "
                                 f"{text!r})", param_hint="--param")
    try:
        value = json.loads(spec)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, list):
        return path, {"choice": value}
    if isinstance(value, dict):
        return path, value
    fixed, dim = parse_option(path, spec)
    if dim is None:
        raise typer.BadParameter(f"{path}={spec}: one value searches nothing; give a range "
                                 "or a list", param_hint="--param")
    return path, dim


def sweep(
    ctx: typer.Context,
    data: DataArgument = None,
    target: TargetOption = None,
    dataset: str | None = typer.Option(None, "--dataset", "-d",
                                       help="Sweep on a stored dataset (its id) instead."),
    lr: str | None = typer.Option(None, help="Learning rate: 1e-4:1e-1:log, 0.001,0.01 or "
                                  "one value."),
    momentum: str | None = typer.Option(None, help="SGD momentum: 0:0.9, 0,0.9, ..."),
    weight_decay: str | None = typer.Option(None, help="Weight decay: a range, list or value."),
    epochs: str | None = typer.Option(None, help="Epochs: 100:10000, 500,1000 or one value."),
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Any job field: PATH=SPEC (repeat), e.g. "
        "'model.hidden=[[16],[32,32]]'.")] = None,
    trials: int | None = typer.Option(None, "--trials", "-n",
                                      help="Trials (default 20; a grid: all its points)."),
    parallel: int | None = typer.Option(None, help="Trials at once."),
    strategy: str = typer.Option("tpe", help="grid, random or tpe."),
    objective: str | None = typer.Option(None, help="train_loss, val_loss, r2, accuracy, "
                                         "val_accuracy or log_loss."),
    direction: str | None = typer.Option(None, help="minimize or maximize."),
    seed: int | None = typer.Option(None, help="The sampler's seed (a rerun asks the same "
                                    "trials)."),
    job_seed: int | None = typer.Option(None, help="Every trial's training seed."),
    prune: str | None = typer.Option(None, help="median or successive_halving."),
    grace: int = typer.Option(100, help="Epochs before a trial can be pruned."),
    validation_fraction: float | None = typer.Option(None, help="Rows held out (0 to 0.5)."),
    optimizer: str | None = typer.Option(None, help="sgd, adam, adamw or rmsprop."),
    kind: str | None = typer.Option(None, help="linear, logistic, polynomial or mlp."),
    hidden: str | None = typer.Option(None, help="Hidden sizes, e.g. 32,32 (--kind mlp)."),
    batch_size: int | None = typer.Option(None, help="Mini-batch size (default: full batch)."),
    standardize: bool = typer.Option(False, help="Scale inputs (and targets)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:N, mps or auto."),
    model_name: str | None = typer.Option(None, "--model-name", "--name",
                                          help="Register the best trial's model as NAME."),
    top: int = typer.Option(10, min=1, help="Trials shown in the table."),
    url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """Search hyperparameters: one job per trial, a live progress bar, the best trials."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    check_data(data, dataset, target)
    job: dict[str, Any] = {k: v for k, v in {
        "seed": job_seed, "validation_fraction": validation_fraction, "device": device,
        "batch_size": batch_size, "standardize": standardize or None,
    }.items() if v is not None}
    if optimizer is not None:
        job["optimizer"] = {"name": optimizer}
    if kind is not None or hidden is not None:
        job["model"] = {"kind": kind or "mlp"}
        if hidden is not None:
            job["model"]["hidden"] = [int(h) for h in hidden.split(",") if h.strip()]
    space: dict[str, Any] = {}
    for name, text in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                       ("epochs", epochs)):
        if text is None:
            continue
        path = SEARCHED[name]
        fixed, dim = parse_option(path, text)
        if dim is not None:
            space[path] = dim
        elif path == "epochs":
            job["epochs"] = fixed
        else:
            job.setdefault("optimizer", {"name": "sgd"})[path.split(".")[1]] = fixed
    for text in param or []:
        path, dim = parse_param(text)
        space[path] = dim
    if not space:
        raise typer.BadParameter("search something: e.g. --lr 1e-4:1e-1:log or --param "
                                 "'model.hidden=[[16],[32,32]]'", param_hint="--lr")
    pruning = {"name": prune, "grace_period": grace} if prune else None
    with connect(ctx, url, api_key) as client:
        if data is not None:
            dataset = client.upload_csv(data, target or [], name=data.stem)["id"]
        started = client.submit_sweep(
            space, dataset_id=dataset, strategy=strategy, objective=objective,
            direction=direction, max_trials=trials, max_parallel=parallel, seed=seed,
            pruning=pruning, model_name=model_name, job=job)
        typer.echo(f"sweep {started['id']}: {started['max_trials']} trials, "
                   f"{started['strategy']}, {started['direction']} {started['objective']}",
                   err=True)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[active]}"), TextColumn("best {task.fields[best]}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True)) as progress:
            bar = progress.add_task("trials", total=started["max_trials"], best="-",
                                    active="")

            def show(event: dict[str, Any]) -> None:
                p = event.get("progress") or {}
                ended = sum(p.get(k, 0) for k in ("succeeded", "pruned", "failed",
                                                  "cancelled"))
                best = event.get("best")
                progress.update(bar, completed=ended, best=fmt(best["value"]) if best else "-",
                                active=f"{p.get('running', 0)} running")

            done = client.wait_sweep(started["id"], on_event=show)
            show({"progress": done["progress"], "best": done["best"]})
    show_trials(done, top)
    if done["status"] != "succeeded":
        err = done.get("error") or {}
        typer.echo(f"sweep {done['id']} {done['status']}: {err.get('type', '')}: "
                   f"{err.get('message', '')}", err=True)
        raise typer.Exit(1)
    best = done["best"]
    typer.echo(f"best trial  {best['trial']}: {done['objective']} {fmt(best['value'])}")
    typer.echo(f"params      {json.dumps(best['params'])}")
    label = f" ({done['model_name']})" if done["model_name"] else ""
    typer.echo(f"model       {done['model_id']}{label}")


def show_trials(sweep: dict[str, Any], top: int) -> None:
    """The best ``top`` trials, best first, then the others by number."""
    paths = list(sweep["search_space"])
    sign = -1.0 if sweep["direction"] == "maximize" else 1.0
    trials = sorted(sweep["trials"] or [], key=lambda t: (
        t["value"] is None, sign * (t["value"] or 0.0), t["number"]))
    columns = [Column("#"), Column("trial"), Column(sweep["objective"], max_width=12),
               *(Column(p.rsplit(".", 1)[-1], max_width=14, drop=7) for p in paths),
               Column("status"), Column("epochs", drop=5), Column("engine", drop=6),
               Column("job", id=True, drop=8)]
    rows = [[str(i + 1), str(t["number"]), fmt(t["value"]),
             *(_param(t["params"].get(p)) for p in paths), t["status"], str(t["epochs"]),
             t["engine_used"] or "", t["job_id"] or ""]
            for i, t in enumerate(trials[:top])]
    print_table(f"top {min(top, len(trials))} of {len(trials)} trials", columns, rows)


def _param(value: Any) -> str:
    return fmt(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else json.dumps(value)


sweeps = typer.Typer(help="Sweeps: list (the default), show, cancel.")
SweepId = Annotated[str, typer.Argument(help="The sweep's id (swp_...).")]

_LIST = [Column("id", id=True), Column("status"), Column("trials", drop=3),
         Column("best", max_width=12, drop=2), Column("strategy", drop=4),
         Column("model", id=True, drop=6), Column("created", drop=5)]


@sweeps.callback(invoke_without_command=True)
def _sweeps(ctx: typer.Context, limit: int = typer.Option(20, min=1, max=500),
            url: str = URL, api_key: str | None = API_KEY) -> None:
    """Sweeps, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(ctx, url, api_key) as client:
        data = client.sweeps(limit=limit)
    print_table("sweeps", _LIST, [
        [s["id"], s["status"], f"{s['progress']['created']}/{s['max_trials']}",
         fmt(s["best"]["value"]) if s["best"] else "", s["strategy"], s["model_id"] or "",
         short_when(s["created_at"])] for s in data])


@sweeps.command("show")
def show(ctx: typer.Context, sweep_id: SweepId, top: int = typer.Option(10, min=1),
         url: str = URL, api_key: str | None = API_KEY) -> None:
    """A sweep: its status, best trial and its best trials."""
    with connect(ctx, url, api_key) as client:
        s = client.get_sweep(sweep_id)
    line("sweep", f"{s['id']} ({s['status']})")
    line("objective", f"{s['direction']} {s['objective']}")
    line("progress", ", ".join(f"{k} {v}" for k, v in s["progress"].items() if v))
    if s["best"]:
        line("best", f"trial {s['best']['trial']}: {fmt(s['best']['value'])}")
    show_trials(s, top)


@sweeps.command("cancel")
def cancel(ctx: typer.Context, sweep_id: SweepId, url: str = URL,
           api_key: str | None = API_KEY) -> None:
    """Cancel a sweep and every trial still queued or running."""
    with connect(ctx, url, api_key) as client:
        s = client.cancel_sweep(sweep_id)
    typer.echo(f"{s['id']} cancel requested")


def register(cli: typer.Typer) -> None:
    cli.command()(sweep)
    cli.add_typer(sweeps, name="sweeps")
