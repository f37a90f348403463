"""The ``mcpsift`` command line.

Heavy dependencies (ClickHouse, FastAPI, uvicorn) are imported inside the
commands that need them, so ``mcpsift detect`` starts fast and works with
only the core installed.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import IO, Iterator, Optional

import typer
from rich.console import Console

from mcpsift import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    help="mcpsift: audit and anomaly detection for MCP servers and gateways.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (keys as in docs/operations.md)")


def _fail(message: str, code: int = 2) -> "typer.Exit":
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _load(config: Optional[Path], **overrides: object):  # type: ignore[no-untyped-def]
    from mcpsift.detectors import UnknownDetector, build_from_settings
    from mcpsift.settings import ConfigError, load_settings

    try:
        settings = load_settings(config, **overrides)
        build_from_settings(settings)  # unknown rule ids or thresholds stop start-up
    except (ConfigError, UnknownDetector) as exc:
        raise _fail(str(exc))
    return settings


def _need(modules: tuple[str, ...], what: str) -> None:
    """Stop with a message naming the extra when an optional module is missing."""
    missing = []
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise _fail(f"{what} needs {', '.join(missing)}: pip install 'mcpsift[all]'")


def _need_all(what: str) -> None:
    _need(("clickhouse_connect", "chdb", "fastapi", "uvicorn", "opentelemetry.sdk", "prometheus_client"), what)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command()
def rules(
    show: Optional[str] = typer.Option(
        None, "--show", help="print every threshold of this rule id in full, as YAML for detectors.thresholds"
    ),
) -> None:
    """List the detection rule ids this build implements, with their thresholds.

    Long lists (command words, sensitive paths, ...) are shown by their size;
    ``--show RULE`` prints them in full, ready to copy into a settings file.
    """
    import yaml

    from mcpsift.detectors import DETECTOR_CLASSES, RULES

    if show is not None:
        if show not in RULES:
            raise _fail(f"unknown rule id {show!r}; `mcpsift rules` lists them")
        defaults = {k: v.default for k, v in RULES[show].Params.model_fields.items()}
        plain = {k: list(v) if isinstance(v, (tuple, frozenset, set)) else v for k, v in defaults.items()}
        print(yaml.safe_dump({"detectors": {"thresholds": {show: plain}}}, sort_keys=False), end="")
        return

    def brief(value: object) -> str:
        if isinstance(value, (list, tuple, set, frozenset, dict)) and len(value) > 3:
            return f"<{len(value)} entries>"
        return str(value)

    for cls in DETECTOR_CLASSES:
        params = ", ".join(f"{k}={brief(v.default)}" for k, v in cls.Params.model_fields.items()) or "-"
        for rule in cls.rule_ids:
            print(f"{rule:40s} {cls.severities[rule]:8s} {params}")


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="bind address [default 127.0.0.1; env MCPSIFT_HOST]"),
    port: Optional[int] = typer.Option(None, help="port [default 8765; env MCPSIFT_PORT]"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="where data lives [default ./.mcpsift]"),
    config: Optional[Path] = ConfigOpt,
    insecure_local: bool = typer.Option(
        False, "--insecure-local", help="no authentication at all (everyone is admin); loopback addresses only"
    ),
) -> None:
    """Run the embedded pipeline: HTTP ingest -> detect -> ClickHouse (in-process).

    Secure by default: every API call needs a key or token. On the first start
    (no keys stored, no identity provider configured) it makes an admin and an
    ingest key and prints them once; only their hashes are stored."""
    _need_all("mcpsift serve")
    import uvicorn

    from mcpsift.api.app import create_app
    from mcpsift.streams.embedded import CHECKPOINT_NAME, EmbeddedRunner

    settings, store = _open_to_serve(config, host, port, data_dir, insecure_local)
    runner = EmbeddedRunner(settings, store)
    started = time.monotonic()
    saved = store.load_checkpoint(CHECKPOINT_NAME)
    resumed_from = saved[0] if saved else 0
    replayed = runner.recover(on_progress=lambda n: err.print(f"recovering: {n:,} events replayed", highlight=False))
    if replayed:
        err.print(
            f"recovered: replayed {replayed:,} events stored after the checkpoint at ingest_seq {resumed_from:,} "
            f"in {time.monotonic() - started:.1f} s",
            highlight=False,
        )
    where = settings.data_dir.resolve() if settings.dsn.startswith("chdb://") else store.url
    err.print(
        f"mcpsift {__version__} serve listening on http://{settings.host}:{settings.port}  "
        f"(POST /v1/events, GET /v1/alerts, GET /healthz)\n"
        f"data: {where}  (ClickHouse {store.url}, database {store.database})",
        highlight=False,
    )

    def stopped() -> None:
        # from the app's shutdown: uvicorn re-raises SIGTERM/SIGINT after it, so nothing runs later
        runner.telemetry.shutdown()  # the last OTLP export
        err.print(
            f"stopped cleanly: {runner.accepted:,} events accepted, {runner.alerts_written:,} alerts written, "
            f"checkpoint at ingest_seq {runner.checkpoint_seq:,}",
            highlight=False,
        )

    authenticator = None if insecure_local else _secure(settings, store)
    if insecure_local:
        _warn_insecure(settings)
    application = create_app(settings, store, runner, on_stopped=stopped, authenticator=authenticator)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )



@app.command("api")
def api_command(
    host: Optional[str] = typer.Option(None, help="bind address [default 127.0.0.1; env MCPSIFT_HOST]"),
    port: Optional[int] = typer.Option(None, help="port [default 8765; env MCPSIFT_PORT]"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="a stopped serve's data dir (embedded store)"),
    config: Optional[Path] = ConfigOpt,
    insecure_local: bool = typer.Option(
        False, "--insecure-local", help="no authentication at all (everyone is admin); loopback addresses only"
    ),
) -> None:
    """Serve only the query API (search, timelines, alerts, inventory, stats, export) over a
    store: a ClickHouse server (clickhouse_dsn) or a stopped serve's data dir. No ingest."""
    _need_all("mcpsift api")
    import uvicorn

    from mcpsift.api.app import create_api_app

    settings, store = _open_to_serve(config, host, port, data_dir, insecure_local)
    authenticator = None
    if insecure_local:
        _warn_insecure(settings)
    else:
        # secure by default, as serve: a store with no keys gets its first ones here
        # (printed once; also written to auth.bootstrap_keys_file when set)
        authenticator = _secure(settings, store)
    err.print(
        f"mcpsift {__version__} api listening on http://{settings.host}:{settings.port}  "
        f"(GET /v1/events, /v1/alerts, /docs; no ingest)\n"
        f"store: ClickHouse {store.url}, database {store.database}",
        highlight=False,
    )
    uvicorn.run(create_api_app(settings, store, authenticator=authenticator), host=settings.host,
                port=settings.port, log_level="warning", access_log=False)

def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _refuse_insecure_unless_loopback(host: str) -> None:
    if not _is_loopback(host):
        raise _fail(
            f"--insecure-local refused on {host}: without authentication anyone who reaches the port could read "
            "every tenant's audit log and forge events. Bind to 127.0.0.1 (--host 127.0.0.1), or drop "
            "--insecure-local and use the API keys serve prints on its first start."
        )


def _warn_insecure(settings) -> None:  # type: ignore[no-untyped-def]
    bar = "!" * 78
    err.print(
        f"[bold red]{bar}\n"
        f"  WARNING: --insecure-local: NO AUTHENTICATION. Every request to http://{settings.host}:{settings.port}\n"
        "  is treated as an all-tenant admin, and anyone on this machine can inject audit events.\n"
        "  For local experiments only; drop --insecure-local for anything else.\n"
        f"{bar}[/]",
        highlight=False,
    )


def _secure(settings, store):  # type: ignore[no-untyped-def]
    """The authenticator of ``serve``; on the first start, the bootstrap keys, printed once."""
    from mcpsift.api.auth import ApiAuthenticator, bootstrap_keys, identity_provider_configured, resource_uri

    try:
        authenticator = ApiAuthenticator(settings, store)
    except ValueError as exc:
        raise _fail(str(exc))
    report = bootstrap_keys(store, settings)
    url = _local_url(settings)
    if report.created:
        bar = "=" * 78
        lines = [
            bar,
            "  mcpsift made two API keys on this first start. They are shown ONCE, here;",
            "  only their hashes are stored. Copy them somewhere safe now.",
            "",
            f"    admin key  (read, triage, replay, keys):  {report.created['admin']}",
            f"    ingest key (POST /v1/events, /v1/traces): {report.created['ingest']}",
            "",
            f"  try:  curl -H \"Authorization: Bearer <admin key>\" {url}/v1/alerts",
            "  more keys:  mcpsift apikey create --role viewer --tenant <tenant>",
        ]
        if settings.auth.bootstrap_keys_file is not None:
            lines.append(f"  (also written to {settings.auth.bootstrap_keys_file}, mode 0600)")
        lines.append(bar)
        err.print("\n".join(lines), highlight=False, markup=False)
    else:
        idp = f"; bearer tokens from {settings.auth.issuer} accepted" if identity_provider_configured(settings) else ""
        err.print(
            f"auth: {report.active_keys} active API key(s){idp}; resource {resource_uri(settings)} "
            "(`mcpsift apikey list` shows them)",
            highlight=False,
            markup=False,
        )
    return authenticator


def _local_url(settings) -> str:  # type: ignore[no-untyped-def]
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def _open_to_serve(config: Optional[Path], host: Optional[str], port: Optional[int], data_dir: Optional[Path],
                   insecure_local: bool):  # type: ignore[no-untyped-def]
    """What `serve` and `api` do before they listen: settings, the insecure-mode
    guard, a free port, the store (migrated)."""
    from mcpsift.store import StoreError, open_store

    settings = _load(config, host=host, port=port, data_dir=data_dir)
    if insecure_local:
        _refuse_insecure_unless_loopback(settings.host)
    _check_port_free(settings.host, settings.port)
    try:
        return settings, open_store(settings)
    except StoreError as exc:
        raise _fail(str(exc))


def _check_port_free(host: str, port: int) -> None:
    """Fail before opening the store, with a message that says what to do."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise _fail(
                f"cannot listen on {host}:{port}: {exc.strerror}. Choose another port with --port or MCPSIFT_PORT."
            )


@contextlib.contextmanager
def _open_output(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        handle = open(path, "wb")
    except OSError as exc:
        raise _fail(f"cannot write output {path}: {exc.strerror}")
    with handle:
        yield handle


@app.command()
def detect(
    input: str = typer.Option(..., "--input", "-i", help="JSONL file of events, or - for stdin"),
    output: str = typer.Option("-", "--output", "-o", help="where alerts go as JSONL, or - for stdout"),
    config: Optional[Path] = ConfigOpt,
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="where trained models are read from (<data-dir>/models) [default ./.mcpsift]"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar and no summary"),
    single_process: bool = typer.Option(
        False, "--single-process", help="read and detect in one process (default: a second process reads a file)"
    ),
) -> None:
    """Run the detectors over a JSONL file of events (no storage) and write alerts as JSONL.

    Invalid lines are reported on stderr with their line numbers and skipped.
    Same input, same output, byte for byte.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from mcpsift.streams.offline import detect_file, detect_lines

    settings = _load(config, data_dir=data_dir)
    shown_invalid = 0

    def on_invalid(line: int, reason: str) -> None:
        nonlocal shown_invalid
        shown_invalid += 1
        if shown_invalid <= 1000:
            err.print(f"line {line}: invalid event: {reason}", highlight=False, markup=False)
        elif shown_invalid == 1001:
            err.print("(more invalid lines; only the first 1000 are listed)")

    size: Optional[int] = None
    if input != "-":
        try:
            size = Path(input).stat().st_size
            open(input, "rb").close()
        except OSError as exc:
            raise _fail(f"cannot read input {input}: {exc.strerror}")
    started = time.perf_counter()
    show_bar = not quiet and err.is_terminal and size is not None
    progress = Progress(
        TextColumn("detect"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=err, disable=not show_bar, transient=True,
    )
    with _open_output(output) as out, progress:
        task = progress.add_task("detect", total=size)
        on_progress = (lambda done: progress.update(task, completed=done)) if show_bar else None
        if input == "-":
            report = detect_lines(sys.stdin.buffer, out, settings, on_invalid=on_invalid)
        else:
            report = detect_file(
                input,
                out,
                settings,
                processes=1 if single_process else None,
                on_invalid=on_invalid,
                on_progress=on_progress,
            )
    elapsed = time.perf_counter() - started
    if not quiet:
        rules_seen = ", ".join(f"{r} {n}" for r, n in sorted(report.by_rule.items())) or "none"
        err.print(
            f"{report.events:,} events ({report.invalid:,} invalid lines, {report.duplicates:,} duplicates, "
            f"{report.late_events:,} late) -> {report.alerts:,} alerts [{rules_seen}] in {elapsed:.1f} s "
            f"({report.events / elapsed if elapsed > 0 else 0:,.0f} events/s)",
            highlight=False,
            markup=False,
        )


@app.command()
def alerts(
    limit: int = typer.Option(20, help="how many, newest first"),
    rule: Optional[str] = typer.Option(None, "--rule", help="only this rule id"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Print stored alerts as JSONL (needs the store; with `serve` running, use GET /v1/alerts)."""
    _need_all("mcpsift alerts")
    from mcpsift.store import StoreError, open_store

    settings = _load(config)
    try:
        store = open_store(settings)
    except StoreError as exc:
        raise _fail(str(exc))
    for alert in store.list_alerts(rule_id=rule, limit=limit):
        print(alert.model_dump_json())


def _when(value: str, option: str):  # type: ignore[no-untyped-def]
    """An RFC 3339 time or a date (UTC when no zone is given)."""
    import datetime as dt

    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _fail(f"{option} {value!r} is not a date or an RFC 3339 time (e.g. 2026-11-20 or 2026-11-20T08:00:00Z)")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.timezone.utc)


@app.command()
def train(
    since: str = typer.Option(..., "--from", help="first event time to learn from (RFC 3339 or a date, UTC)"),
    until: str = typer.Option(..., "--to", help="learn from events before this time"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="where data lives [default ./.mcpsift]"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Learn the tool-sequence and volume models from stored events and write
    them to <data-dir>/models, where `serve` and `detect` load them at start."""
    _need_all("mcpsift train")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mcpsift.detectors.learned import train_from_store
    from mcpsift.store import StoreError, open_store

    start, end = _when(since, "--from"), _when(until, "--to")
    if start >= end:
        raise _fail(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})")
    settings = _load(config, data_dir=data_dir)
    try:
        store = open_store(settings)
        total = store.count_events_between(start, end)
    except StoreError as exc:
        raise _fail(str(exc))
    if total == 0:
        raise _fail(f"no stored events from {start.isoformat()} to {end.isoformat()}: nothing to learn (models left as they were)", 1)
    model_dir = Path(settings.data_dir) / "models"
    started = time.perf_counter()
    progress = Progress(
        TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("events"), TimeRemainingColumn(),
        console=err, disable=not err.is_terminal, transient=True,
    )
    with progress:
        task = progress.add_task("train", total=total)
        report = train_from_store(
            store, start, end, model_dir, settings, on_progress=lambda n: progress.update(task, completed=n)
        )
    for line in report.summary():
        print(line)
    err.print(
        f"learned from {report.events:,} events ({start.isoformat()} to {end.isoformat()}) in "
        f"{time.perf_counter() - started:.1f} s; wrote {', '.join(str(p) for p in report.files)}",
        highlight=False,
    )


@app.command()
def bench(
    which: str = typer.Argument("all", help="validate | detect | serve | outputs | hooks | publish | chain | worker | api | all (all but api: it loads 5M events)"),
    events: Optional[int] = typer.Option(None, help="events to use (default: each benchmark's own)"),
) -> None:
    """Run the benchmarks in bench/ and print their figures."""
    import importlib

    names = ["validate", "detect", "serve", "outputs", "hooks", "publish", "chain", "worker"] if which == "all" else [which]
    for name in names:
        try:
            module = importlib.import_module(f"mcpsift.bench.bench_{name}")
        except ImportError as exc:
            raise _fail(f"no benchmark {name!r} ({exc}); choose validate, detect, serve, outputs, hooks, publish, chain, worker, api or all")
        argv = ["--events", str(events)] if events else []
        module.main(argv)


from mcpsift.demo.cli import app as demo_app  # noqa: E402 (light: typer and rich only)

app.add_typer(demo_app, name="demo", help="Labelled demo traffic: generate it, score the detectors on it (evaluate), stream it into serve (run).")

from mcpsift.outputs_cli import app as outputs_app  # noqa: E402 (light: typer and rich only)
from mcpsift.apikey_cli import app as apikey_app  # noqa: E402 (light: typer and rich only)

app.add_typer(apikey_app, name="apikey", help="API keys for automation: create (shown once), list, revoke.")

app.add_typer(outputs_app, name="outputs", help="SIEM outputs: delivery status, a test alert through each, re-drive dead deliveries, re-enable.")

from mcpsift.worker_cli import topics_app, worker  # noqa: E402 (light: typer only until run)

app.command("worker")(worker)
app.add_typer(topics_app, name="topics", help="Kafka topics of the distributed runner: create them (idempotent).")

from mcpsift.dashboards.cli import app as dashboards_app  # noqa: E402 (light: typer and rich only)

app.add_typer(dashboards_app, name="dashboards", help="Grafana dashboards: build their JSON from code (build), draw them as PNGs (snapshot).")

from mcpsift.verify_cli import verify as _verify  # noqa: E402 (light: typer and rich only)

app.command("verify")(_verify)

collector_app = typer.Typer(no_args_is_help=True, add_completion=False)
app.add_typer(collector_app, name="collector", help="Collector publishers embedded in MCP servers: their spool and counters.")


@collector_app.command("status")
def collector_status(
    spool_dir: Path = typer.Option(..., "--spool-dir", help="the publisher's spool_dir"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Queue depth, spool size and sent/failed/dropped/retried counters of a publisher, read from its spool dir."""
    import json

    from mcpsift.collectors.publishers import collector_status as read_status

    if not spool_dir.is_dir():
        raise _fail(f"{spool_dir} is not a directory: pass the spool_dir the publisher was given")
    report = read_status(spool_dir)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    spool, publisher = report["spool"], report["publisher"] or {}
    print(f"spool {spool_dir}: {spool.get('records', 0):,} records, {spool.get('bytes', 0):,} bytes waiting"
          f" ({'held by a running publisher' if report['running'] else 'no publisher running'})")
    if publisher:
        shown = ("queue_depth", "sent", "rejected", "failed", "retried", "dropped", "spilled", "replayed", "connected", "last_error", "written_at")
        for key in shown:
            if key in publisher:
                print(f"  {key}: {publisher[key]}")
    else:
        print("  no counters yet (the publisher writes status.json every 5 s and at close)")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
