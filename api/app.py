"""The FastAPI application of ``mcpsift serve`` (embedded runner + ingest + reads)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI

import mcpsift
from mcpsift.settings import Settings
from mcpsift.store import Store
from mcpsift.streams.embedded import EmbeddedRunner
from mcpsift.telemetry import Telemetry

from .routes import alerts, health, ingest, otlp, outputs
from .routes import clients, events, export, inventory, principals, sessions, stats, tokens
from .routes import apikeys as apikeys_routes
from .routes import wellknown as wellknown_routes
from .routes import replay as replay_routes
from .routes import audit as audit_routes
from .routes import metrics as metrics_routes
from .audit import AuditMiddleware, AuditWriter

__all__ = ["create_app", "create_api_app", "QUERY_ROUTERS"]

#: the read-only incident-response routers, mounted by `serve` and by `api`
QUERY_ROUTERS = (
    events.router, sessions.router, principals.router, tokens.router, clients.router, inventory.router,
    stats.router, export.router,
)


def create_app(
    settings: Settings,
    store: Store,
    runner: EmbeddedRunner,
    on_stopped: Optional[Callable[[], None]] = None,
    authenticator: Optional[Any] = None,
) -> FastAPI:
    """An app over an already recovered runner; it starts the runner and stops it on shutdown.

    ``authenticator`` (``api.auth.ApiAuthenticator``) checks every caller; None is
    insecure local mode (``mcpsift serve --insecure-local`` only: everyone is admin).
    """

    audit = AuditWriter(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.start()
        audit.start()
        try:
            yield
        finally:
            runner.stop()  # drains queued events, flushes alerts, checkpoints
            audit.stop()
            if on_stopped is not None:
                on_stopped()

    app = FastAPI(title="mcpsift", version=mcpsift.__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.runner = runner
    app.state.authenticator = authenticator
    # the runner's (a stand-in runner in a test may have none)
    app.state.telemetry = getattr(runner, "telemetry", None) or Telemetry.get("serve", settings.telemetry)
    app.include_router(health.router)
    app.include_router(metrics_routes.router)
    app.include_router(wellknown_routes.router)
    app.include_router(apikeys_routes.router)
    app.include_router(ingest.router)
    app.include_router(alerts.router)
    for router in QUERY_ROUTERS:
        app.include_router(router)
    app.include_router(outputs.router)
    app.include_router(replay_routes.router)
    app.include_router(otlp.router)
    app.include_router(audit_routes.router)
    app.state.audit = audit
    app.add_middleware(AuditMiddleware, writer=audit)
    return app


def create_api_app(settings: Settings, store: Store, authenticator: Optional[Any] = None) -> FastAPI:
    """The query API alone (``mcpsift api``): the read and triage routers over a
    store, no ingest and no runner. ``authenticator`` as in :func:`create_app`."""
    audit = AuditWriter(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        audit.start()
        try:
            yield
        finally:
            audit.stop()
            app.state.telemetry.shutdown()  # the last OTLP export (uvicorn re-raises SIGTERM after this)

    app = FastAPI(title="mcpsift API", version=mcpsift.__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.runner = None
    app.state.authenticator = authenticator
    app.state.telemetry = Telemetry.get("api", settings.telemetry)
    app.include_router(wellknown_routes.router)
    app.include_router(metrics_routes.router)
    app.include_router(alerts.router)
    for router in QUERY_ROUTERS:
        app.include_router(router)

    app.include_router(audit_routes.router)

    @app.get("/healthz", tags=["health"], summary="Liveness of the API (no ingest runner in this mode)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "mode": "api"}

    app.state.audit = audit
    app.add_middleware(AuditMiddleware, writer=audit)
    return app
