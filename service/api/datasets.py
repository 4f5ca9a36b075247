"""/v1/datasets: upload (JSON or CSV), list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.api.http import JSONBytes, errors, is_json, json_body_doc
from service.api.views import dataset_public
from service.arrays import decode_json
from service.config import Settings
from service.datasets import from_csv, from_json, store_dataset
from service.deps import ArtifactsDep, MetaDep, SettingsDep, TenantDep
from service.errors import UnsupportedMediaType
from service.idempotency import Replay, idempotent
from service.limits import check_table
from service.schemas import DatasetCreate, DatasetPublic, DatasetsPublic
from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore
from service.store.tables import DatasetRow

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Cursor = Annotated[str | None, Query(description="`next` of the previous page.")]

_CSV_DOC = {
    "text/csv": {
        "schema": {"type": "string"},
        "example": "x,y\n3.3,1.7\n4.4,2.76\n",
    }
}


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    responses={200: {"model": DatasetPublic, "description": "Same content already stored"},
               **errors(400, 409, 413, 415, 422, 503)},
    openapi_extra=json_body_doc(DatasetCreate, extra_content=_CSV_DOC),
)
async def create_dataset(
    request: Request,
    meta: MetaDep,
    artifacts: ArtifactsDep,
    settings: SettingsDep,
    tenant: TenantDep,
    target: Annotated[list[str] | None, Query(description="CSV: target column(s).")] = None,
    features: Annotated[list[str] | None, Query(description="CSV: feature columns.")] = None,
    name: Annotated[str | None, Query(max_length=200, description="CSV: a name.")] = None,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", description="A retry with the same key and body returns "
        "the dataset the first request stored; another body with the key is a 409.")] = None,
) -> Response:
    """Upload a dataset as JSON rows or as CSV; the same content is stored once."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype not in ("text/csv", "application/csv") and not is_json(ctype):
        raise UnsupportedMediaType(
            f"send application/json or text/csv (got {ctype or 'no content type'!r})"
        )
    body = await request.body()
    row, status = await run_in_threadpool(
        _create, meta, artifacts, settings, tenant, ctype, body, target, features, name,
        idempotency_key)
    return JSONBytes(
        dataset_public(row).model_dump(mode="json"),
        status_code=status,
        headers={"Location": f"/v1/datasets/{row.id}"},
    )



def _create(
    meta: MetadataStore, artifacts: ArtifactStore, settings: Settings, tenant: str, ctype: str,
    body: bytes, target: list[str] | None, features: list[str] | None, name: str | None,
    idempotency_key: str | None,
) -> tuple[DatasetRow, int]:
    """Parse, check and store (in a worker thread: it reads and writes the stores)."""
    key_body = body + repr((target, features, name)).encode()  # the query is the request too
    with idempotent(meta, tenant, "datasets", idempotency_key, key_body) as attempt:
        if isinstance(attempt, Replay):
            return meta.get_dataset(attempt.resource_id, tenant), attempt.status_code
        if is_json(ctype):
            x, y, info = from_json(decode_json(body))
        else:
            x, y, info = from_csv(body, _split(target), _split(features) or None, name)
        check_table(settings, x.shape[0], x.shape[1], y.shape[1])
        row, created = store_dataset(meta, artifacts, x, y, info, tenant)
        status = 201 if created else 200
        attempt.created(row.id, status)
    return row, status


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
def delete_dataset(
    dataset_id: str, meta: MetaDep, artifacts: ArtifactsDep, tenant: TenantDep
) -> Response:
    """Delete a dataset (409 while a queued or running job uses it)."""
    row = meta.delete_dataset(dataset_id, tenant)
    artifacts.discard_dataset(row.sha256, lambda: meta.sha_in_use(row.sha256))
    return Response(status_code=204)
