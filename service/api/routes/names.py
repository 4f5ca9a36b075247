"""/v1/model-names: a name's versions, its aliases (and every move of them), its traffic
split. Each change re-resolves names for predict at once, here and on every API process
(``Services.catalog_moved``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.api.deps import MetaDep, PrincipalDep, ServicesDep, TenantDep, require
from service.api.responses import errors, json_body_doc, require_json
from service.api.schemas import (
    AliasHistory,
    AliasMove,
    AliasPublic,
    AliasUpdate,
    ModelNamePublic,
    NameVersion,
    TrafficPublic,
    TrafficWeights,
)
from service.data.arrays import decode_json
from service.errors import InvalidInput

router = APIRouter(prefix="/v1/model-names/{name}", tags=["model names"])

_TRAIN = [Depends(require("train"))]  # a predict key reads names; changing them needs train


@router.get("", response_model=ModelNamePublic, responses=errors(404))
def get_name(name: str, meta: MetaDep, tenant: TenantDep) -> ModelNamePublic:
    """A name's versions, aliases (`latest` included) and traffic split."""
    view = meta.name_view(name, tenant)
    return ModelNamePublic(
        name=name,
        versions=[NameVersion(version=r.version or 0, model_id=r.id, kind=r.kind,
                              created_at=r.created_at) for r in view.versions],
        aliases=view.aliases,
        traffic=None if view.traffic is None else dict(view.traffic))


@router.put("/aliases/{alias}", response_model=AliasPublic,
            responses=errors(400, 404, 415, 422), dependencies=[*_TRAIN, Depends(require_json)])
async def set_alias(name: str, alias: str, body: AliasUpdate, services: ServicesDep,
                    principal: PrincipalDep) -> AliasPublic:
    """Point an alias (`champion`) at a version; the move is recorded in the history."""
    model, previous = await run_in_threadpool(
        services.meta.set_alias, name, alias, body.version, principal.tenant, principal.key_id)
    if previous != body.version:
        services.catalog_moved()
    return AliasPublic(name=name, alias=alias, version=body.version, model_id=model.id,
                       previous_version=previous)


@router.delete("/aliases/{alias}", status_code=204, responses=errors(404, 409, 422),
               dependencies=_TRAIN)
async def delete_alias(name: str, alias: str, services: ServicesDep,
                       principal: PrincipalDep) -> Response:
    """Remove an alias (recorded in the history); 409 while the traffic split uses it."""
    await run_in_threadpool(services.meta.delete_alias, name, alias, principal.tenant,
                            principal.key_id)
    services.catalog_moved()
    return Response(status_code=204)


@router.get("/history", response_model=AliasHistory, responses=errors(404, 422))
def alias_history(
    name: str, meta: MetaDep, tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> AliasHistory:
    """Every move of the name's aliases, newest first: from and to which version, when, and
    by which key."""
    page = meta.alias_history(name, tenant, limit, cursor)
    return AliasHistory(
        data=[AliasMove(alias=m.alias, from_version=m.from_version, to_version=m.to_version,
                        moved_at=m.moved_at, tenant=m.tenant, key_id=m.key_id)
              for m in page.rows],
        count=page.count, next=page.next)


@router.put("/traffic", response_model=TrafficPublic, responses=errors(400, 404, 415, 422),
            dependencies=[*_TRAIN, Depends(require_json)],
            openapi_extra=json_body_doc(TrafficWeights))
async def set_traffic(name: str, request: Request, services: ServicesDep,
                      tenant: TenantDep) -> TrafficPublic:
    """Split predict by the bare name over aliases or versions by weight (whole percents
    summing to 100); `X-Fitserve-Route-Key` makes a caller's draw sticky."""
    weights = decode_json(await request.body())
    if not isinstance(weights, dict):
        raise InvalidInput('the body is an object of percents: {"champion": 90, '
                           '"challenger": 10}')
    routes = await run_in_threadpool(services.meta.set_traffic, name, weights, tenant)
    services.catalog_moved()
    return TrafficPublic(name=name, weights={r.target: r.weight for r in routes},
                         versions={r.target: r.model.version or 0 for r in routes})


@router.delete("/traffic", status_code=204, responses=errors(404), dependencies=_TRAIN)
async def clear_traffic(name: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Remove the split: predict by the bare name answers from the latest version again."""
    await run_in_threadpool(services.meta.clear_traffic, name, tenant)
    services.catalog_moved()
    return Response(status_code=204)
