"""``fitserve evaluate | export | import``: a model's life after training, through the
client. A model is named by id, by name (its latest version), as name@N or name@alias;
``fitserve alias`` and ``fitserve traffic`` (cli/names.py) manage a name's aliases and split."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.client import API_KEY, URL, connect, fmt, line
from service.client import Client, NotFoundError

ModelRef = Annotated[str, typer.Argument(
    help="The model: its id (mdl_...), a name (its latest version), name@N or name@alias.")]


def _model_id(client: Client, ref: str) -> str:
    """The id of a model reference; a name is looked up among that name's versions, an
    alias among its aliases."""
    if ref.startswith("mdl_"):
        return ref
    name, _, version = ref.partition("@")
    if version and not version.isdigit():
        view = client.model_name(name)
        if version not in view["aliases"]:
            raise NotFoundError(404, "not_found", f"model {name!r} has no alias {version!r}")
        version = str(view["aliases"][version])
    versions = client.models(name=name, limit=500)
    if version:
        versions = [m for m in versions if str(m["version"]) == version]
    if not versions:
        raise NotFoundError(404, "not_found", f"no model {ref!r}")
    return str(max(versions, key=lambda m: m["version"] or 0)["id"])


def _metrics(ev: dict[str, Any]) -> None:
    m = ev["metrics"]
    if ev["task"] == "regression":
        for key in ("mse", "rmse", "mae", "r2"):
            line(key, fmt(m[key]))
        if len(m["per_target"]) > 1:
            for t in m["per_target"]:
                line(t["name"], f"mse {fmt(t['mse'])}  mae {fmt(t['mae'])}  r2 {fmt(t['r2'])}")
        return
    line("accuracy", fmt(m["accuracy"]))
    line("log loss", fmt(m["log_loss"]))
    if m.get("roc_auc") is not None:
        line("roc auc", fmt(m["roc_auc"]))
    line("confusion", "actual class in rows, predicted in columns")
    for row in m["confusion_matrix"]:
        line("", "  ".join(f"{v:>6}" for v in row))
    for c in m["per_class"]:
        line(f"class {c['class']}", f"precision {fmt(c['precision'])}  recall "
             f"{fmt(c['recall'])}  ({c['support']} rows)")


def evaluate(
    ctx: typer.Context, model: ModelRef,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="The stored dataset (ds_...) "
                                         "to score it on.")],
    plot: Annotated[Path | None, typer.Option(
        "--plot", dir_okay=False, help="Also write the figure (predicted against actual, or "
        "the confusion matrix) to this PNG file.")] = None,
    as_json: bool = typer.Option(False, "--json", help="The evaluation as the API answers."),
    url: str = URL, api_key: str | None = API_KEY,
) -> None:
    """Score a model on a stored dataset: MSE, RMSE, MAE, R²; or accuracy, log loss,
    confusion matrix, precision and recall per class, ROC AUC."""
    with connect(ctx, url, api_key) as client:
        ev = client.evaluate(_model_id(client, model), dataset)
        png = client.evaluation_plot(ev["id"]) if plot is not None else None
    if as_json:
        import json

        typer.echo(json.dumps(ev, indent=2))
    else:
        line("evaluation", f"{ev['id']} ({ev['model_id']} on {ev['dataset_id']})")
        line("rows", f"{ev['rows_used']} scored, {ev['rows_refused']} refused")
        for r in ev["refused"]:
            first = ", ".join(str(i) for i in r["first_rows"])
            line("refused", f"{r['rows']}: {r['reason']} (rows {first}...)")
        if ev["ignored_columns"]:
            line("ignored", ", ".join(ev["ignored_columns"]))
        _metrics(ev)
    if plot is not None and png is not None:
        plot.write_bytes(png)
        typer.echo(f"figure      {plot}", err=True)


def export(
    ctx: typer.Context, model: ModelRef,
    format: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", dir_okay=False, help="The file (default: <model id>.onnx).")
    ] = None,
    url: str = URL, api_key: str | None = API_KEY,
) -> None:
    """Write the model as an ONNX graph (input x, or one input per column for a model
    trained on columns; output y, and labels and probabilities for a classifier):
    onnxruntime and other runtimes run it."""
    with connect(ctx, url, api_key) as client:
        model_id = _model_id(client, model)
        blob = client.export(model_id, format)
    path = output or Path(f"{model_id}.{format}")
    path.write_bytes(blob)
    typer.echo(str(path))


def import_checkpoint(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="A fitserve checkpoint (.safetensors).")],
    name: Annotated[str, typer.Option("--name", help="Register it as this name's next "
                                      "version.")],
    sha256: Annotated[str | None, typer.Option(
        help="The sha256 its server gave (X-Checkpoint-SHA256); default: the file's own.")
    ] = None,
    url: str = URL, api_key: str | None = API_KEY,
) -> None:
    """Register a checkpoint from another fitserve (GET /v1/models/{id}/checkpoint)."""
    blob = file.read_bytes()
    with connect(ctx, url, api_key) as client:
        m = client.import_checkpoint(blob, name=name,
                                     sha256=sha256 or hashlib.sha256(blob).hexdigest())
    line("model", f"{m['id']} ({m['name']} v{m['version']})")
    line("kind", m["kind"])
    line("features", ", ".join(m["feature_names"]))


def predict_batch(
    ctx: typer.Context, model: ModelRef,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="The stored dataset (ds_...) "
                                         "to score: the model's input columns, by name.")],
    format: Annotated[str, typer.Option(
        "--format", "-f", help="csv, parquet or jsonl.")] = "csv",
    include_input: Annotated[bool, typer.Option(
        "--include-input", help="Write the dataset's input columns before the prediction.")
    ] = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", dir_okay=False, help="The file (default: <prediction id>.<format>)."
    )] = None,
    url: str = URL, api_key: str | None = API_KEY,
) -> None:
    """Score a model over a whole stored dataset (a job on the training queue) and write
    the predictions to a file."""
    with connect(ctx, url, api_key) as client:
        p = client.batch_predict(model, dataset, format=format, include_input=include_input)
        blob = client.prediction_result(p["id"])
    path = output or Path(f"{p['id']}.{format}")
    path.write_bytes(blob)
    version = f" v{p['version']}" if p["version"] is not None else ""
    line("prediction", f"{p['id']} ({p['model_name'] or p['model_id']}{version} on "
         f"{p['dataset_id']})")
    line("rows", str(p["progress"]["rows"]))
    line("file", str(path))


def register(cli: typer.Typer) -> None:
    from service.cli.names import alias, traffic

    cli.command()(evaluate)
    cli.command()(export)
    cli.command("predict-batch")(predict_batch)
    cli.command("import")(import_checkpoint)
    cli.add_typer(alias, name="alias")
    cli.add_typer(traffic, name="traffic")
