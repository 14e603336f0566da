"""OpenAPI for Kubernetes clients: ``/openapi/v3`` (index), ``/openapi/v3/apis/ai_team.io/v1``."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["openapi"])
