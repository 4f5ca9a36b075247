"""``fitserve jobs``: list (the default), show, cancel, history (or logs), delete. Training
itself is ``fitserve train``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli.client import (
    API_KEY,
    URL,
    connect,
    fmt,
    line,
    short_when,
    when,
)
from service.cli.tables import Column, print_table
from service.client import ConflictError

jobs = typer.Typer(help="Training jobs: list (the default), show, cancel, history, delete.")

JobId = Annotated[str, typer.Argument(help="The job's id (job_...).")]
STATUS = typer.Option(None, help="Only jobs in this status.")
LIMIT = typer.Option(20, min=1, max=500, help="How many, newest first.")
JSON = typer.Option(False, "--json", help="The job as the API answers it.")

_COLUMNS = [
    Column("id", id=True), Column("status"), Column("epoch", drop=3),
    Column("loss", drop=2, max_width=12), Column("model", id=True, drop=6),
    Column("name", drop=5, max_width=20), Column("created", drop=4),
]


@jobs.callback(invoke_without_command=True)
def _jobs(
    ctx: typer.Context, status: str | None = STATUS, limit: int = LIMIT, url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """Training jobs: `fitserve jobs` lists them, newest first."""
    if ctx.invoked_subcommand is None:
        list_jobs(ctx, status, limit, url, api_key)


@jobs.command("list")
def list_jobs(
    ctx: typer.Context, status: str | None = STATUS, limit: int = LIMIT, url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """List jobs, newest first (ids in full; narrow terminals drop columns instead)."""
    with connect(ctx, url, api_key) as client:
        data = client.jobs(status=status, limit=limit)
    print_table("jobs", _COLUMNS, [
        [j["id"], j["status"], f"{j['progress']['epoch']}/{j['progress']['epochs']}",
         fmt(j["progress"]["loss"]), j["model_id"] or "", j["model_name"] or "",
         short_when(j["created_at"])]
        for j in data
    ])


def _spec(hp: dict[str, Any]) -> str:
    """The hyperparameters a reader compares runs by, on one line."""
    model = hp.get("model") or {}
    opt = hp.get("optimizer") or {}
    parts = [f"model={model.get('kind', 'linear')}"]
    parts += [f"{k}={model[k]}" for k in ("degree", "hidden") if model.get(k) is not None]
    parts += [f"loss={hp.get('loss')}", f"optimizer={opt.get('name')}", f"lr={opt.get('lr')}",
              f"epochs={hp.get('epochs')}", f"batch_size={hp.get('batch_size') or 'full'}",
              f"seed={hp.get('seed')}"]
    if hp.get("validation_fraction"):
        parts.append(f"validation_fraction={hp['validation_fraction']}")
    if hp.get("standardize"):
        parts.append("standardize")
    if hp.get("early_stopping"):
        parts.append(f"patience={hp['early_stopping'].get('patience')}")
    return " ".join(parts)


@jobs.command("show")
def show(ctx: typer.Context, job_id: JobId, as_json: bool = JSON, url: str = URL,
         api_key: str | None = API_KEY) -> None:
    """A job's status, progress, hyperparameters, device, timings, error and model."""
    with connect(ctx, url, api_key) as client:
        job = client.job(job_id)
    if as_json:
        import json

        typer.echo(json.dumps(job, indent=2))
        return
    p, hp, err = job["progress"], job["hyperparameters"], job.get("error")
    units = " (standardized units)" if hp.get("standardize") else ""
    line("job", job["id"])
    line("status", job["status"] + (" (cancel requested)" if job["cancel_requested"]
                                    and job["status"] == "running" else ""))
    line("dataset", job["dataset_id"])
    line("model", (job["model_id"] or "-") + (f" ({job['model_name']})"
                                              if job["model_name"] else ""))
    line("epoch", f"{p['epoch']} / {p['epochs']}")
    line("loss", fmt(p["loss"]) + units)
    if p.get("val_loss") is not None:
        line("val loss", fmt(p["val_loss"]) + units)
    line("device", f"{job['device_used'] or job['device']}"
         + (f" (engine {job['engine_used']})" if job.get("engine_used") else ""))
    line("spec", _spec(hp))
    line("created", when(job["created_at"]))
    line("started", when(job["started_at"]))
    line("finished", when(job["finished_at"]))
    if job.get("waiting_reason"):
        line("waiting", job["waiting_reason"])
    if job.get("stopped_early"):
        line("stopped", job["stopped_early"]["message"])
    if err:
        line("error", f"{err['type']}: {err['message']}")
        if err.get("hint"):
            line("hint", err["hint"])


@jobs.command("cancel")
def cancel(ctx: typer.Context, job_id: JobId, url: str = URL,
           api_key: str | None = API_KEY) -> None:
    """Cancel a queued job at once, or a running one within about a second."""
    with connect(ctx, url, api_key) as client:
        job = client.cancel(job_id)
    if job["status"] == "cancelled":
        typer.echo(f"cancelled {job['id']}")
    else:
        typer.echo(f"cancelling {job['id']}: it stops within about a second")


def history(
    ctx: typer.Context, job_id: JobId,
    last: int | None = typer.Option(None, min=1, help="Only the last N logged epochs."),
    url: str = URL, api_key: str | None = API_KEY,
) -> None:
    """The loss at every logged epoch, one line each (and the validation loss, if any)."""
    with connect(ctx, url, api_key) as client:
        job = client.job(job_id)
        h = client.history(job_id)
    if job["hyperparameters"].get("standardize"):
        typer.echo("loss in standardized units (the job standardized its data); the model's "
                   "final loss is in the data's units", err=True)
    epochs, losses, val = h["epoch"], h["loss"], h.get("val_loss")
    start = len(epochs) - last if last is not None and last < len(epochs) else 0
    typer.echo("epoch loss" + (" val_loss" if val else ""))
    for i in range(start, len(epochs)):
        typer.echo(f"{epochs[i]} {fmt(losses[i])}" + (f" {fmt(val[i])}" if val else ""))


jobs.command("history")(history)
jobs.command("logs", help="The same as `history`.")(history)


@jobs.command("delete")
def delete(ctx: typer.Context, job_id: JobId, url: str = URL,
           api_key: str | None = API_KEY) -> None:
    """Delete a job that has ended, and its history; the model it trained stays."""
    with connect(ctx, url, api_key) as client:
        try:
            client.delete_job(job_id)
        except ConflictError as e:  # queued or running: the command to run, not the route
            if client.job(job_id)["cancel_requested"]:
                e.hint = e.hint or f"see when it has stopped: fitserve jobs show {job_id}"
            else:
                e.hint = e.hint or f"fitserve jobs cancel {job_id}, then delete it"
            raise
    typer.echo(f"deleted {job_id}")
