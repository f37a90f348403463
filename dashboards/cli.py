"""``mcpsift dashboards``: build the Grafana JSON from code, or render the dashboards as PNGs.

Imports only typer and rich at module level (the CLI stays light); the
Grafana SDK, matplotlib and the store load when a command runs.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Grafana dashboards: build their JSON from code, render them as PNGs from a store.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

_UTC = _dt.timezone.utc


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _need(modules: tuple[str, ...], what: str) -> None:
    from mcpsift.cli import _need as need

    need(modules, what)


@app.command()
def build(
    check: bool = typer.Option(False, "--check", help="only check that the checked-in JSON is what the code builds (exit 1 if not)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="write the JSON here instead of dashboards/json/"),
) -> None:
    """Write every dashboard's Grafana JSON (dashboards/json/<slug>.json) from the panel specs."""
    _need(("grafana_foundation_sdk",), "building dashboards")
    from .build import JSON_DIR, stale_files, write_all

    directory = out_dir or JSON_DIR
    if check:
        stale = stale_files(directory)
        if stale:
            err.print(f"out of date in {directory}: {', '.join(stale)}; run `mcpsift dashboards build` and commit the result",
                      highlight=False)
            raise typer.Exit(1)
        out.print(f"dashboards in {directory} are up to date", highlight=False)
        return
    try:
        written = write_all(directory)
    except OSError as exc:
        raise _fail(f"cannot write {directory}: {exc.strerror or exc}")
    for path in written:
        out.print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)", highlight=False)


def _parse_time(value: Optional[str], option: str) -> Optional[_dt.datetime]:
    if value is None:
        return None
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"{option} {value!r} is not an ISO 8601 time (e.g. 2026-11-02T08:00:00Z)")
    return t.replace(tzinfo=_UTC) if t.tzinfo is None else t


@app.command()
def snapshot(
    out_dir: Path = typer.Option(..., "--out", "-o", help="directory for the PNGs (one per dashboard)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="the store to read [default ./.mcpsift, or the config's ClickHouse]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file (clickhouse_dsn, database...)"),
    demo: bool = typer.Option(False, "--demo", help="generate demo traffic with attacks into a temporary store and draw that"),
    hours: float = typer.Option(2.0, help="with --demo: hours of traffic"),
    tenants: int = typer.Option(4, help="with --demo: number of tenants (3 to 8)"),
    tenant: Optional[list[str]] = typer.Option(None, "--tenant", help="only these tenants (repeatable) [default: all]"),
    since: Optional[str] = typer.Option(None, help="start of the time range (ISO 8601) [default: first event]"),
    until: Optional[str] = typer.Option(None, help="end of the time range (ISO 8601) [default: last event]"),
    principal: Optional[str] = typer.Option(None, help="Investigation: the principal subject [default with --demo: the most alerted one]"),
    session: Optional[str] = typer.Option(None, help="Investigation: the session id"),
    token: Optional[str] = typer.Option(None, help="Investigation: the token fingerprint"),
) -> None:
    """Run every panel's query against a store and draw each dashboard as a PNG."""
    _need(("matplotlib", "clickhouse_connect", "chdb"), "snapshots")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mcpsift.store import StoreError

    from .panels import DASHBOARDS
    from .snapshot import data_extent, most_alerted_principal, snapshot as run_snapshot

    start_at, end_at = _parse_time(since, "--since"), _parse_time(until, "--until")
    if demo and data_dir is not None:
        raise _fail("give --demo or --data-dir, not both")
    if demo and not (0 < hours <= 24 and 3 <= tenants <= 8):
        raise _fail("--hours must be in (0, 24] and --tenants between 3 and 8")
    temp: Optional[Path] = None
    panels = sum(len(d.panels) for d in DASHBOARDS)
    progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=not err.is_terminal)
    try:
        with progress:
            if demo:
                from mcpsift.store import Store

                from .load import load_demo

                temp = Path(tempfile.mkdtemp(prefix="mcpsift-snapshot-"))
                store: Any = Store(f"chdb://{temp / 'clickhouse'}", "mcpsift")
                store.migrate()
                task = progress.add_task("demo traffic", total=100)
                loaded = load_demo(store, hours=hours, tenants=tenants, work_dir=temp,
                                   on_progress=lambda stage, f: progress.update(task, description=f"demo: {stage}",
                                                                                completed=int(f * 100)))
                progress.remove_task(task)
                err.print(f"demo store: {loaded.events:,} events, {loaded.alerts:,} alerts, "
                          f"{loaded.dead_letters} dead letters over {hours:g} h", highlight=False)
            else:
                from mcpsift.cli import _load
                from mcpsift.store import open_store

                settings = _load(config, data_dir=data_dir)
                store = open_store(settings)
            extent = data_extent(store)
            if extent is None and (start_at is None or end_at is None):
                raise _fail(f"the store at {store.url} holds no events: ingest some (mcpsift serve + mcpsift demo run), "
                            "or draw demo traffic with --demo")
            first, last = extent if extent is not None else (start_at, end_at)
            start = start_at or first - _dt.timedelta(minutes=1)
            end = end_at or max(last, _dt.datetime.now(_UTC) if demo else last) + _dt.timedelta(minutes=1)
            if start >= end:
                raise _fail("--since must be before --until")
            entity = {"principal": principal or "", "session": session or "", "token": token or ""}
            if demo and not any(entity.values()):
                entity["principal"] = most_alerted_principal(store) or ""
            task = progress.add_task("panels", total=panels)
            written = run_snapshot(
                store, out_dir, start, end, tenants=tenant or (), entity=entity,
                on_panel=lambda spec, panel: progress.update(task, advance=1, description=f"{spec.slug}: {panel.key}"),
            )
    except StoreError as exc:
        raise _fail(str(exc))
    except OSError as exc:
        raise _fail(f"cannot write {out_dir}: {exc.strerror or exc}")
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    for path in written:
        out.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", highlight=False)
    out.print(f"{panels} panels of {len(written)} dashboards, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
              highlight=False)
