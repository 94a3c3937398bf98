"""Liveness, open without an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict:
    return {"status": "ok", "loaded_models": request.app.state.pool.loaded_ids()}
