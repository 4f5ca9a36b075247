"""/v1/datasets: upload (JSON or CSV), list, read, delete."""

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
from service.data.arrays import is_json
from service.data.datasets import delete_dataset as delete_dataset_and_file
from service.data.datasets import upload_dataset
from service.errors import UnsupportedMediaType

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
               **errors(400, 409, 413, 415, 422, 503, 507)},
    openapi_extra=json_body_doc(DatasetCreate, extra_content=_CSV_DOC),
    dependencies=[Depends(require_room)],
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
    row, created = await run_in_threadpool(
        lambda: upload_dataset(
            meta, artifacts, settings, tenant, media="json" if is_json(ctype) else "csv",
            body=body, target=_split(target), features=_split(features) or None, name=name,
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
