"""``POST /v1/events``: HTTP ingest of MCP audit events.

The body is a JSON array of events, or NDJSON (one event per line; a single
JSON object is one line of NDJSON). Each event gets a verdict. Invalid events
are kept in ``dead_letter`` with the reason and do not fail the batch; a body
that cannot be split into events at all is kept too, and answered 400.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ..deps import RunnerDep, SettingsDep
from ..security import require, sender_tenants

__all__ = ["router", "split_body"]

log = logging.getLogger("mcpsift.ingest")

router = APIRouter(prefix="/v1", tags=["ingest"], dependencies=[Depends(require("ingest"))])

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


class BodyError(ValueError):
    pass


def split_body(body: bytes) -> list[bytes]:
    """The raw bytes of each event in a JSON-array or NDJSON body."""
    stripped = body.lstrip()
    if not stripped:
        raise BodyError("empty body: send a JSON array of events or NDJSON")
    if stripped[:1] == b"[":
        try:
            return [bytes(item) for item in _raw_list.decode(body)]
        except msgspec.DecodeError as exc:
            raise BodyError(f"body is not a valid JSON array: {exc}") from None
    return [line for line in body.splitlines() if line.strip()]


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OverflowError
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OverflowError
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/events",
    status_code=202,
    summary="Ingest MCP audit events (JSON array or NDJSON)",
    responses={
        202: {"description": "at least one event accepted; per-event verdicts"},
        400: {"description": "the body is not a JSON array or NDJSON (it is kept as a dead letter)"},
        413: {"description": "the body is larger than max_body_bytes"},
        503: {"description": "the store refused the batch; nothing was accepted, retry"},
        422: {"description": "no event in the body was valid (all kept as dead letters)"},
    },
)
async def ingest_events(request: Request, runner: RunnerDep, settings: SettingsDep) -> JSONResponse:
    try:
        body = await _read_limited(request, settings.max_body_bytes)
    except OverflowError:
        return JSONResponse(
            {"error": f"body larger than {settings.max_body_bytes} bytes; split it into smaller batches"},
            status_code=413,
        )
    try:
        items = split_body(body)
    except BodyError as exc:
        if body.strip():
            await run_in_threadpool(runner.dead_letter, "http", str(exc), body)
        return JSONResponse({"error": str(exc)}, status_code=400)
    if not items:
        return JSONResponse({"error": "no events in the body"}, status_code=400)
    try:
        verdicts = await run_in_threadpool(runner.ingest, items, "http", sender_tenants(request))
    except Exception as exc:  # the store refused the batch: nothing was accepted
        log.exception("could not store an ingest batch")
        return JSONResponse(
            {"error": f"could not store the batch ({type(exc).__name__}: {str(exc)[:200]}); nothing was accepted, retry"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    accepted = sum(1 for v in verdicts if v.status == "accepted")
    content: dict[str, Any] = {
        "accepted": accepted,
        "rejected": len(verdicts) - accepted,
        "results": [v.as_dict() for v in verdicts],
    }
    # orjson: the verdict list of a 1,000-event batch is the largest answer we send
    return Response(orjson.dumps(content), status_code=202 if accepted else 422, media_type="application/json")
