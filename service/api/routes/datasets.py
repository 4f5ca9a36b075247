"""/v1/datasets: upload (JSON, CSV, NDJSON, Parquet, Arrow), list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.api.deps import (
    ArtifactsDep,
    MetaDep,
    ServicesDep,
    SettingsDep,
    TenantDep,
    require_room,
)
from service.api.responses import JSONBytes, errors, json_body_doc
from service.api.schemas import DatasetCreate, DatasetPublic, DatasetsPublic
from service.api.views import dataset_public
from service.data.columns import parse_schema
from service.data.datasets import Upload, upload_dataset
from service.data.datasets import delete_dataset as delete_dataset_and_file
from service.data.readers import MEDIA_TYPES, media_of
from service.data.spool import Spool
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Cursor = Annotated[str | None, Query(description="`next` of the previous page.")]

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_OTHER_DOC = {
    "text/csv": {
        "schema": {"type": "string"},
        "example": "sqft,city,has_garage,price\n1200,Lyon,yes,250000\n950,,no,181000\n",
    },
    "application/x-ndjson": {"schema": {"type": "string"},
                             "example": '{"sqft": 1200, "city": "Lyon", "price": 250000}\n'},
    "application/vnd.apache.parquet": _BINARY,
    "application/vnd.apache.arrow.stream": _BINARY,
}
_LARGER = ("send larger data as CSV (text/csv), Parquet (application/vnd.apache.parquet) or "
           "Arrow (application/vnd.apache.arrow.stream)")


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def _too_large(size: int, limit: int, json: bool, declared: bool = False) -> PayloadTooLarge:
    """413, and the connection closes: the rest of the body is never read."""
    of = f" of {size} bytes" if declared else ""
    if json:
        message = (f"the JSON body{of} exceeds the limit of {limit} bytes for JSON "
                   f"(FITSERVE_MAX_JSON_BODY_BYTES); {_LARGER}")
    else:
        message = f"the body{of} exceeds the limit of {limit} bytes (FITSERVE_MAX_BODY_BYTES)"
    return PayloadTooLarge(message, headers={"Connection": "close"})


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    responses={200: {"model": DatasetPublic, "description": "Same content already stored"},
               **errors(400, 409, 413, 415, 422, 503, 507)},
    openapi_extra=json_body_doc(DatasetCreate, extra_content=_OTHER_DOC),
    dependencies=[Depends(require_room)],
)
async def create_dataset(
    request: Request,
    meta: MetaDep,
    artifacts: ArtifactsDep,
    settings: SettingsDep,
    tenant: TenantDep,
    target: Annotated[list[str] | None, Query(
        description="CSV, NDJSON, Parquet, Arrow: target column(s).")] = None,
    features: Annotated[list[str] | None, Query(
        description="CSV, NDJSON, Parquet, Arrow: feature columns (default: all others).")
    ] = None,
    name: Annotated[str | None, Query(max_length=200, description="A name.")] = None,
    schema: Annotated[list[str] | None, Query(
        description="CSV, NDJSON, Parquet, Arrow: column types that override the inferred "
        "ones, `name:type` with type numeric, categorical or boolean (repeat or "
        "comma-separate: `?schema=zip:categorical`). JSON bodies carry `schema` instead.")
    ] = None,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", description="A retry with the same key and body returns "
        "the dataset the first request stored; another body with the key is a 409.")] = None,
) -> Response:
    """Upload a dataset (JSON, CSV, NDJSON, Parquet or Arrow); the same content is stored
    once. The body is spooled to disk as it comes and read in a worker thread."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    media = media_of(ctype)
    if media is None:
        raise UnsupportedMediaType(
            f"send application/json, {', '.join(sorted(set(MEDIA_TYPES)))} "
            f"(got {ctype or 'no content type'!r})")
    is_json = media == "json"
    if is_json and schema:
        raise InvalidInput('a JSON body carries its schema in the body: "schema": '
                           '{"zip": "categorical"}', field="schema")
    overrides = parse_schema(_split(schema)) if schema else None
    json_limit = is_json and settings.max_json_body_bytes < settings.max_body_bytes
    limit = settings.max_json_body_bytes if json_limit else settings.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(int(length), limit, json_limit, declared=True)
    with Spool(settings.data_dir / "uploads") as spool:
        sha = await spool.fill(request.stream(), limit,
                               lambda size: _too_large(size, limit, json_limit))
        upload = Upload(media, spool.path, _split(target), _split(features) or None, name,
                        overrides, body_sha256=sha)
        row, created = await run_in_threadpool(
            lambda: upload_dataset(meta, artifacts, settings, tenant, upload,
                                   idempotency_key=idempotency_key))
    return JSONBytes(
        dataset_public(row).model_dump(mode="json"),
        status_code=201 if created else 200,
        headers={"Location": f"/v1/datasets/{row.id}"},
    )


@router.get("", response_model=DatasetsPublic)
def list_datasets(
    meta: MetaDep, tenant: TenantDep, limit: Limit = 50, cursor: Cursor = None
) -> DatasetsPublic:
    """List datasets, newest first."""
    page = meta.list_datasets(tenant, limit, cursor)
    return DatasetsPublic(data=[dataset_public(r) for r in page.rows], count=page.count,
                          next=page.next)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=errors(404))
def get_dataset(dataset_id: str, meta: MetaDep, tenant: TenantDep) -> DatasetPublic:
    """A dataset's shape, column names, checksum and per-column statistics."""
    return dataset_public(meta.get_dataset(dataset_id, tenant))


@router.delete("/{dataset_id}", status_code=204, responses=errors(404, 409))
def delete_dataset(dataset_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Delete a dataset (409 while a queued or running job uses it); works on a full disk."""
    delete_dataset_and_file(services.meta, services.artifacts, dataset_id, tenant,
                            services.free_reserve)
    return Response(status_code=204)
