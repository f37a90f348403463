"""``mcpsift outputs``: status, test, redrive, enable.

While ``mcpsift serve`` runs it holds the embedded store, so status, redrive
and enable ask it over HTTP (``/v1/outputs``); when it does not run they open
the store themselves. ``test`` never touches the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, add_completion=False)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file with an `outputs:` list")
ApiKeyOpt = typer.Option(
    None, "--api-key", envvar="MCPSIFT_API_KEY",
    help="a key for the running serve (viewer for status, admin for redrive/enable) [env MCPSIFT_API_KEY]",
)


def _settings(config: Optional[Path]) -> Any:
    from mcpsift.cli import _load

    settings = _load(config)
    if not settings.outputs:
        err.print("no outputs configured: add an `outputs:` list to the config file (see docs/outputs.md)")
        raise typer.Exit(2)
    return settings


def _serve_url(settings: Any) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def _via_serve(
    settings: Any, method: str, path: str, body: Any = None, api_key: Optional[str] = None
) -> Optional[Any]:
    """The JSON answer of a running ``mcpsift serve``; None when none is listening."""
    import httpx

    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.request(method, _serve_url(settings) + path, json=body, headers=headers, timeout=10)
    except httpx.TransportError:
        return None
    if response.status_code in (401, 403):
        from mcpsift.cli import _fail

        hint = "pass a key with --api-key or MCPSIFT_API_KEY" if not api_key else "use a key with that role"
        raise _fail(f"mcpsift serve is running and refused this ({response.status_code}: "
                    f"{response.json().get('detail', '')}); {hint}")
    if response.status_code == 404 and path.startswith("/v1/outputs/"):
        from mcpsift.cli import _fail

        raise _fail(response.json().get("detail", response.text))
    response.raise_for_status()
    return response.json()


def _with_store(settings: Any, work: Callable[[Any], Any]) -> Any:
    from mcpsift.cli import _fail, _need_all
    from mcpsift.store import StoreError, open_store

    _need_all("mcpsift outputs")
    try:
        store = open_store(settings)
    except StoreError as exc:
        raise _fail(str(exc))
    try:
        return work(store)
    finally:
        store.close()


def _check_name(settings: Any, name: str) -> None:
    from mcpsift.cli import _fail

    names = [c.output_name for c in settings.outputs if c.enabled]
    if name not in names:
        raise _fail(f"no enabled output named {name!r} (outputs: {', '.join(names) or 'none'})")


@app.command()
def status(
    config: Optional[Path] = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Per output: backlog, delivered, dead, last error, and whether its receiver disabled it."""
    from mcpsift.streams.outbox import output_status

    settings = _settings(config)
    rows = _via_serve(settings, "GET", "/v1/outputs", api_key=api_key)
    source = "running serve"
    if rows is None:
        rows = _with_store(settings, lambda store: output_status(store, settings.outputs))
        source = "store"
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=f"outputs ({source})")
    for column in ("name", "type", "target", "state", "backlog", "oldest pending", "delivered", "dead", "last error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if not row["enabled"]:
            state = "off (config)"
        elif row.get("disabled_by_receiver"):
            state = "[red]disabled by receiver[/]"
        elif row.get("paused_for_s"):
            state = f"[yellow]throttled {row['paused_for_s']} s[/]"
        else:
            state = "[green]on[/]"
        oldest = row.get("oldest_pending_s")
        table.add_row(
            row["name"], row["type"], row["target"], state, f"{row['backlog']:,}",
            f"{oldest:,.0f} s" if oldest is not None else "-", f"{row['delivered']:,}", f"{row['dead']:,}",
            (row.get("last_error") or "-")[:120],
        )
    out.print(table)


@app.command("test")
def test_outputs(
    config: Optional[Path] = ConfigOpt,
    output: Optional[str] = typer.Option(None, "--output", "-o", help="only this output (by name)"),
) -> None:
    """Send a synthetic alert (rule `mcpsift.test`) through every enabled output, ignoring
    their filters, and report each result. Exit status 1 when any failed."""
    from mcpsift.streams.outbox import send_test_alert

    settings = _settings(config)
    configs = [c for c in settings.outputs if c.enabled and (output is None or c.output_name == output)]
    if output is not None and not configs:
        _check_name(settings, output)
    results = send_test_alert(configs)
    table = Table(title="mcpsift outputs test")
    for column in ("name", "target", "result", "latency", "error"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(
            r["name"], r["target"], "[green]delivered[/]" if r["ok"] else f"[red]{r['outcome']}[/]",
            f"{r['latency_ms']:,.0f} ms", r["error"] or "-",
        )
    out.print(table)
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


@app.command()
def redrive(
    name: str = typer.Argument(..., help="output name"),
    alert_id: Optional[list[str]] = typer.Option(None, "--alert-id", help="only these alerts (repeatable)"),
    config: Optional[Path] = ConfigOpt,
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Make the dead deliveries of an output pending again, with a fresh retry schedule."""
    settings = _settings(config)
    _check_name(settings, name)
    answer = _via_serve(settings, "POST", f"/v1/outputs/{name}/redrive", {"alert_ids": alert_id}, api_key=api_key)
    count = answer["redriven"] if answer is not None else _with_store(
        settings, lambda store: store.redrive_deliveries(name, alert_id)
    )
    out.print(f"{name}: {count:,} dead deliveries are pending again")


@app.command()
def enable(
    name: str = typer.Argument(..., help="output name"),
    config: Optional[Path] = ConfigOpt,
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Re-enable an output that its receiver disabled (HTTP 410 Gone)."""
    settings = _settings(config)
    _check_name(settings, name)
    if _via_serve(settings, "POST", f"/v1/outputs/{name}/enable", api_key=api_key) is None:
        _with_store(settings, lambda store: store.save_output_state(name, {"disabled": None}))
    out.print(f"{name}: enabled")


@app.command("run")
def run_dispatcher(config: Optional[Path] = ConfigOpt) -> None:
    """Deliver stored alerts to the SIEM outputs until stopped (SIGTERM/SIGINT).

    For the distributed runner: workers store alerts and queue their deliveries;
    this one process sends them. Run exactly one per store (two would send
    twice). ``mcpsift serve`` does this itself."""
    import signal
    import threading

    from mcpsift.streams.outbox import Dispatcher

    settings = _settings(config)

    def work(store: Any) -> None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        dispatcher = Dispatcher(store, settings.outputs)
        dispatcher.start()
        names = ", ".join(c.output_name for c in settings.outputs if c.enabled)
        err.print(f"mcpsift outputs run: delivering to {names} (store {store.url}, "
                  f"database {store.database}); exactly one of these per store", highlight=False)
        try:
            while not stop.wait(1.0):
                pass
        finally:
            dispatcher.stop()
            err.print("stopped: deliveries in flight finished, the rest stay queued", highlight=False)

    _with_store(settings, work)
