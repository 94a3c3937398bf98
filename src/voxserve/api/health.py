"""Liveness, open without an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request

from voxserve.runtime.threads import active_workers

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict:
    return {
        "status": "ok",
        "loaded_models": request.app.state.pool.loaded_ids(),
        "busy_workers": active_workers(),
    }
