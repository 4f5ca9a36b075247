"""GET /metrics: Prometheus' text format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.telemetry import Telemetry

router = APIRouter(tags=["health"])


def telemetry_of(request: Request) -> Telemetry:
    return request.app.state.telemetry


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """Requests by route and status with latencies, jobs by status, queue depth, epochs run,
    rows predicted."""
    body, content_type = telemetry_of(request).exposition()
    return Response(body, media_type=content_type)
