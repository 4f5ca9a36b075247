"""GET /: a small dashboard (one self-contained page: no CDN, no build step)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@cache
def _page() -> str:
    return (files("service") / "static" / "dashboard.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """Jobs with live loss curves, models with weight and bias, links to plots and docs."""
    return HTMLResponse(_page())
