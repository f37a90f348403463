"""``POST /v1/traces``: OTLP/HTTP trace ingest (protobuf or JSON, optionally gzip).

Point any OpenTelemetry exporter at ``http://<mcpsift>/v1/traces``: spans of
MCP servers (the OpenTelemetry semantic conventions for MCP, e.g. the ``mcp``
SDK's own middleware) become events (``streams/otlp.py`` has the mapping) and
take the same path as ``POST /v1/events``: validated, stored, then detected.
Other spans are counted and ignored, so a whole service's traces can be sent.

Answers follow the OTLP/HTTP specification: 200 with an
``ExportTraceServiceResponse`` in the request's encoding (``partial_success``
names the spans that could not be mapped; they are kept in ``dead_letter`` as
ids and reasons, never their content, which may hold credentials), 400 for an
undecodable body, 413 above ``max_body_bytes`` (compressed or decompressed),
415 for another content type or encoding, 503 (retryable) when the store
refused the batch. Error bodies are ``google.rpc.Status`` messages.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from mcpsift.streams.otlp import (
    JSON,
    MappedBatch,
    OtlpCounters,
    OtlpError,
    Rejection,
    decode_request,
    decompress,
    encode_response,
    encode_status,
    iter_rejection_reasons,
    map_request,
    media_type_of,
)

from ..deps import RunnerDep, SettingsDep
from ..security import require, sender_tenants
from .ingest import _read_limited

__all__ = ["router", "counters_of"]

log = logging.getLogger("mcpsift.otlp")

router = APIRouter(prefix="/v1", tags=["otlp"], dependencies=[Depends(require("ingest"))])

_GRPC_CODE = {400: 3, 413: 8, 415: 3, 501: 12, 503: 14}  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNIMPLEMENTED, UNAVAILABLE


def counters_of(app: FastAPI) -> OtlpCounters:
    """The app's OTLP counters (created on first use; read by ``GET /healthz``)."""
    counters = getattr(app.state, "otlp", None)
    if counters is None:
        counters = app.state.otlp = OtlpCounters()
    return counters


def _error(media_type: str, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = encode_status(media_type, message, _GRPC_CODE.get(status, 2))
    return Response(body, status_code=status, media_type=media_type, headers=headers)


def _decode_and_map(body: bytes, encoding: str | None, media_type: str, limit: int) -> MappedBatch:
    # CPU work (inflate, protobuf, mapping): run off the event loop
    return map_request(decode_request(decompress(body, encoding, limit), media_type))


@router.post(
    "/traces",
    summary="Ingest OTLP/HTTP traces; MCP server spans become events",
    responses={
        200: {"description": "ExportTraceServiceResponse; partial_success counts spans that could not be mapped"},
        400: {"description": "the body is not an OTLP ExportTraceServiceRequest"},
        413: {"description": "the body (or its decompressed form) is larger than max_body_bytes"},
        415: {"description": "Content-Type is not application/x-protobuf or application/json, or an unknown Content-Encoding"},
        503: {"description": "the store refused the batch; nothing was accepted, retry"},
    },
)
async def export_traces(request: Request, runner: RunnerDep, settings: SettingsDep) -> Response:
    counters = counters_of(request.app)
    counters.requests += 1
    try:
        media_type = media_type_of(request.headers.get("content-type"))
    except OtlpError as exc:
        counters.bad_requests += 1
        return _error(JSON, exc.status, str(exc))
    limit = settings.max_body_bytes
    try:
        body = await _read_limited(request, limit)
        batch = await run_in_threadpool(
            _decode_and_map, body, request.headers.get("content-encoding"), media_type, limit
        )
    except OverflowError:
        counters.bad_requests += 1
        return _error(media_type, 413, f"body larger than {limit} bytes (max_body_bytes); export smaller batches")
    except OtlpError as exc:
        counters.bad_requests += 1
        return _error(media_type, exc.status, str(exc))

    rejections = list(batch.rejections)
    if batch.events:
        items = [orjson.dumps(event) for event in batch.events]
        try:
            verdicts = await run_in_threadpool(runner.ingest, items, "otlp", sender_tenants(request))
        except Exception as exc:  # the store refused the batch: nothing was accepted
            log.exception("could not store an OTLP batch")
            return _error(
                media_type,
                503,
                f"could not store the batch ({type(exc).__name__}: {str(exc)[:200]}); nothing was accepted, retry",
                headers={"Retry-After": "5"},
            )
        for verdict in verdicts:
            if verdict.status != "accepted":  # the runner has kept the event as a dead letter
                event = batch.events[verdict.index]
                rejections.append(_rejection_of(event, verdict.reason or "rejected by the pipeline"))
    if batch.rejections:
        await _keep_rejections(runner, batch.rejections)
    counters.add(batch, len(rejections))

    message = ""
    if rejections:
        reasons = "; ".join(iter_rejection_reasons(rejections))
        message = (
            f"{len(rejections)} of {batch.received} spans could not be mapped to MCP audit events ({reasons}); "
            "their ids are in mcpsift's dead letters"
        )
        log.warning("OTLP export: %s", message)
    return Response(encode_response(media_type, len(rejections), message), status_code=200, media_type=media_type)


def _rejection_of(event: dict[str, Any], reason: str) -> Rejection:
    trace = event.get("trace") or {}
    return Rejection(trace.get("trace_id", ""), trace.get("span_id", ""), event.get("type", ""), reason)


async def _keep_rejections(runner: Any, rejections: list[Rejection]) -> None:
    """One dead letter per request: span ids, names and reasons (no span content)."""
    first = rejections[0].reason
    reason = f"{len(rejections)} OTLP span(s) could not be mapped: {first}"
    payload = orjson.dumps({"otlp_rejected_spans": [r.as_dict() for r in rejections]})
    try:
        await run_in_threadpool(runner.dead_letter, "otlp", reason, payload)
    except Exception:  # the events were stored; losing this note is logged, not fatal
        log.exception("could not keep the ids of %d rejected OTLP spans", len(rejections))
