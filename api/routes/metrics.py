"""``GET /metrics``: mcpsift's own metrics in the Prometheus text format
(docs/operations.md, "Self-telemetry").

Counters and latencies only, no tenant data; still, by default it needs an
authenticated caller of any role (a scraper gets its own key, e.g.
``mcpsift apikey create --role viewer``). ``telemetry.metrics_require_auth:
false`` opens it for a scraper on a trusted network.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from mcpsift.telemetry import METRICS_CONTENT_TYPE

from ..security import current_principal

__all__ = ["router"]

router = APIRouter(tags=["telemetry"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    if request.app.state.settings.telemetry.metrics_require_auth:
        await current_principal(request)  # 401 without valid credentials; any role will do
    return Response(request.app.state.telemetry.metrics_text(), media_type=METRICS_CONTENT_TYPE)
