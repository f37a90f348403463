"""``mcpsift worker`` and ``mcpsift topics``: the distributed runner's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rich.console import Console

__all__ = ["topics_app", "worker"]

topics_app = typer.Typer(no_args_is_help=True, add_completion=False)

err = Console(stderr=True, soft_wrap=True)
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (keys as in docs/operations.md)")

_DISTRIBUTED = ("faust", "aiokafka", "clickhouse_connect", "opentelemetry.sdk", "prometheus_client")


def _settings(config: Optional[Path], bootstrap_servers: Optional[str]):  # type: ignore[no-untyped-def]
    from .cli import _fail, _load

    settings = _load(config)
    if bootstrap_servers:
        from mcpsift.settings import ConfigError, load_settings

        try:
            settings = load_settings(config, kafka={**settings.kafka.model_dump(exclude_none=True), "bootstrap_servers": bootstrap_servers})
        except ConfigError as exc:
            raise _fail(str(exc))
    return settings


BootstrapOpt = typer.Option(None, "--bootstrap-servers", help="host:port,... [default kafka.bootstrap_servers]")


@topics_app.command("create")
def topics_create(config: Optional[Path] = ConfigOpt, bootstrap_servers: Optional[str] = BootstrapOpt) -> None:
    """Create mcp.events, mcp.events.keyed, mcp.alerts, mcp.deadletter and the detector-state
    changelog (names, partitions, retention from settings.kafka). Idempotent: existing topics
    are left as they are."""
    from mcpsift.cli import _fail, _need
    from mcpsift.streams.topics import create_topics

    _need(("aiokafka", "faust"), "mcpsift topics create")

    settings = _settings(config, bootstrap_servers)
    try:
        results = create_topics(settings.kafka)
    except Exception as exc:
        raise _fail(f"cannot create topics on {settings.kafka.bootstrap_servers}: {type(exc).__name__}: {exc}")
    failed = False
    for r in results:
        line = f"{r.spec.name:<40} {r.status:<17} partitions {r.partitions if r.partitions is not None else '-':>4}  ({r.spec.role})"
        if r.status == "exists-different":
            line += f"  settings ask for {r.spec.partitions}: left as it is (see docs/operations.md, sizing)"
        if r.error:
            line += f"  {r.error}"
            failed = True
        err.print(line, highlight=False, markup=False)
    if failed:
        raise typer.Exit(1)


def worker(
    config: Optional[Path] = ConfigOpt,
    bootstrap_servers: Optional[str] = BootstrapOpt,
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="where learned models (and an embedded store) live"),
    loglevel: str = typer.Option("WARNING", "--loglevel", help="faust/mcpsift log level"),
    broker_wait_s: float = typer.Option(30.0, "--broker-wait-s", help="how long to wait for the broker at start"),
) -> None:
    """Run one distributed worker: mcp.events -> validate, enrich, detect (state in faust
    Tables) -> ClickHouse and mcp.alerts. Start as many as the topics have partitions."""
    from mcpsift.cli import _fail, _need
    from mcpsift.store import StoreError, open_store

    _need(_DISTRIBUTED, "mcpsift worker")
    from mcpsift.streams.app import run_worker

    settings = _settings(config, bootstrap_servers)
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    from mcpsift.streams.topics import missing_topics

    levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    if loglevel.upper() not in levels:
        raise _fail(f"--loglevel {loglevel!r}: choose one of {', '.join(levels)}")
    k = settings.kafka
    try:
        missing = missing_topics(k, broker_wait_s)
    except Exception as exc:
        raise _fail(
            f"cannot reach Kafka at {k.bootstrap_servers} (waited {broker_wait_s:g} s: {type(exc).__name__}: {exc}); "
            "start the broker or fix kafka.bootstrap_servers / MCPSIFT_KAFKA__BOOTSTRAP_SERVERS"
        )
    if missing:
        err.print(
            f"warning: topics {', '.join(missing)} do not exist; run `mcpsift topics create` first "
            "(otherwise they are created on first use with the broker's defaults)",
            highlight=False,
            markup=False,
        )
    try:
        store = open_store(settings)
    except StoreError as exc:
        raise _fail(str(exc))
    err.print(
        f"mcpsift worker: {k.bootstrap_servers}  {k.events_topic} -> {k.keyed_topic} -> {k.alerts_topic} "
        f"(dead letters: {k.deadletter_topic}); store ClickHouse {store.url}, database {settings.database}"
        + (f"; metrics http://{settings.worker.metrics_host}:{settings.worker.metrics_port}/metrics" if settings.worker.metrics_port else ""),
        highlight=False,
        markup=False,
    )
    run_worker(settings, store, loglevel=loglevel.upper())
