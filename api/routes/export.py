"""``GET /v1/export/events``: any event search as NDJSON or CSV, streamed.

The response is written page by page as the store is read (keyset pages of
``export_batch`` rows), so an export of a million rows never sits in memory.
The first page is read before the response starts: a bad filter or range is
still a clean 400."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from typing import Annotated, Any, Iterator, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from mcpsift.store import queries

from ..deps import QueryLimitsDep, StoreDep, ViewerDep
from ..querying import run_query
from .events import EventSearch, event_filters

__all__ = ["router", "CSV_COLUMNS"]

router = APIRouter(prefix="/v1/export", tags=["export"])

CSV_COLUMNS = queries.EVENT_PUBLIC_COLUMNS


def _value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, _dt.datetime) else value


def _ndjson(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for row in rows:
        record = row.get("payload")
        if record is None:  # an undecodable stored payload: still export what we know
            record = {k: _value(row[k]) for k in CSV_COLUMNS}
        yield json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def _csv(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for n, row in enumerate(rows, start=1):
        writer.writerow([_value(row[c]) for c in CSV_COLUMNS])
        if n % 500 == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


@router.get(
    "/events",
    summary="Export an event search as NDJSON (stored records) or CSV (searchable fields), streamed",
    description="Same filters as `GET /v1/events`; oldest first. The range defaults to the last 24 hours "
    "(at most 31 days); `max_rows` caps the export (at most 1,000,000).",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}},
                     "description": "the events, one per line"}},
)
async def export_events(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    search: Annotated[EventSearch, Depends(event_filters)],
    format: Literal["ndjson", "csv"] = "ndjson",
    max_rows: Annotated[int, Query(ge=1, le=1_000_000)] = 100_000,
) -> StreamingResponse:
    def start():  # type: ignore[no-untyped-def]
        window = queries.resolve_range(search.since, search.until, limits)
        return queries.iter_events(
            store, principal.scope, search.filters, window, max_rows=max_rows,
            with_payload=format == "ndjson", limits=limits,
        )

    rows = await run_query(start)
    if format == "ndjson":
        body, media, suffix = _ndjson(rows), "application/x-ndjson", "ndjson"
    else:
        body, media, suffix = _csv(rows), "text/csv; charset=utf-8", "csv"
    return StreamingResponse(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="mcpsift-events.{suffix}"'}
    )
