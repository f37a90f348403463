"""The FastAPI application of ``mcpsift serve`` (embedded runner + ingest + reads)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Optional

from fastapi import FastAPI

import mcpsift
from mcpsift.settings import Settings
from mcpsift.store import Store
from mcpsift.streams.embedded import EmbeddedRunner

from .routes import alerts, health, ingest, otlp, outputs
from .routes import replay as replay_routes

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    store: Store,
    runner: EmbeddedRunner,
    on_stopped: Optional[Callable[[], None]] = None,
) -> FastAPI:
    """An app over an already recovered runner; it starts the runner and stops it on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            runner.stop()  # drains queued events, flushes alerts, checkpoints
            if on_stopped is not None:
                on_stopped()

    app = FastAPI(title="mcpsift", version=mcpsift.__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.runner = runner
    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(alerts.router)
    app.include_router(outputs.router)
    app.include_router(replay_routes.router)
    app.include_router(otlp.router)
    return app
