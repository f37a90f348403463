"""SIEM output throughput: delivered alerts/s per output to a local receiver.

For each output type, N alerts go to a real loopback receiver two ways, in
the same process, one right after the other:

* **direct** (the baseline): the output's own ``send`` in batches of
  ``batch_size`` with ``concurrency`` batches in flight — the output and its
  receiver alone;
* **durable**: the production path — the alerts are stored (chDB) and
  enqueued in the outbox, then the dispatcher fetches due deliveries, sends
  them and records every outcome in the store; timed from dispatcher start
  until the store shows all N delivered.

The ratio durable/direct is what the outbox costs; read it, not the raw
alerts/s, across machines. The receivers are Python threads on loopback, so
HTTP figures are bounded by them as much as by the outputs.

Usage: ``python bench/bench_outputs.py [--alerts 2000] [--only webhook,syslog_tcp]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

try:  # as a module: bench.bench_outputs (or mcpsift.bench.bench_outputs)
    from .receivers import HttpReceiver, SyslogReceiver
    from .report import emit
except ImportError:  # as a script: python bench/bench_outputs.py
    from receivers import HttpReceiver, SyslogReceiver  # type: ignore[no-redef]
    from report import emit  # type: ignore[no-redef]

__all__ = ["run", "main"]

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _hec(req: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"content-type": "application/json"}, b'{"text":"Success","code":0}'


def _bulk(req: Any) -> tuple[int, dict[str, str], bytes]:
    n = req.body.count(b"\n") // 2
    body = json.dumps({"errors": False, "items": [{"create": {"status": 201}}] * n}).encode()
    return 200, {"content-type": "application/json"}, body


def _targets(tmp: Path) -> dict[str, Callable[[], tuple[dict[str, Any], Any]]]:
    """name -> a function starting its receiver, returning (output config, receiver)."""

    def http(kind: str, responder: Any = None, **extra: Any) -> Callable[[], tuple[dict[str, Any], Any]]:
        def start() -> tuple[dict[str, Any], Any]:
            r = HttpReceiver(responder).start()
            return {"type": kind, "url": r.url, **extra}, r

        return start

    def syslog(transport: str, fmt: str = "json") -> Callable[[], tuple[dict[str, Any], Any]]:
        def start() -> tuple[dict[str, Any], Any]:
            r = SyslogReceiver(transport).start()
            return {"type": "syslog", "host": "127.0.0.1", "port": r.port, "transport": transport, "format": fmt}, r

        return start

    def file(kind: str) -> Callable[[], tuple[dict[str, Any], Any]]:
        def start() -> tuple[dict[str, Any], Any]:
            return {"type": kind, "path": str(tmp / f"{kind}-{time.monotonic_ns()}.jsonl")}, None

        return start

    return {
        "webhook": http("webhook", secret=SECRET),
        "splunk_hec": http("splunk_hec", _hec, token="bench-token"),
        "elastic": http("elastic", _bulk, api_key="YmVuY2g6a2V5"),
        "ocsf_http": http("ocsf"),
        "syslog_udp": syslog("udp"),
        "syslog_tcp": syslog("tcp"),
        "syslog_tcp_cef": syslog("tcp", "cef"),
        "file": file("file"),
        "ocsf_file": file("ocsf"),
    }


def _alerts(n: int) -> list[Any]:
    from mcpsift.alerts import Alert, make_alert_id

    base = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.timezone.utc)
    return [
        Alert(
            alert_id=make_alert_id("bench", i),
            rule_id="auth.token_reuse_across_audiences",
            severity="high",
            time=base + dt.timedelta(seconds=i),
            tenant="acme",
            principal_subject=f"user{i % 97}@example.com",
            session_id=f"s-{i}",
            token_fingerprint="hmac-sha256:" + f"{i:064x}",
            server_resource="https://mcp.acme.example/billing",
            event_ids=[f"ev-{i}-a", f"ev-{i}-b"],
            title="Token presented at more than one audience",
            description=f"token hmac-sha256:{i:016x} minted for https://mcp.acme.example/crm was presented at "
            "https://mcp.acme.example/billing",
            score=0.9,
            attack=["T1550.001"],
            detector="auth_tokens.TokenReuseAcrossAudiences",
        )
        for i in range(n)
    ]


def _direct(config: dict[str, Any], alerts: list[Any]) -> float:
    from mcpsift.streams.sinks.outputs import build_outputs, parse_output_configs

    (output,) = build_outputs(parse_output_configs([config]))
    cfg = output.config

    async def go() -> float:
        await output.open()
        gate = asyncio.Semaphore(cfg.concurrency)

        async def one(batch: list[Any]) -> list[Any]:
            async with gate:
                return await output.send(batch)

        started = time.perf_counter()
        results = await asyncio.gather(
            *(one(alerts[i : i + cfg.batch_size]) for i in range(0, len(alerts), cfg.batch_size))
        )
        elapsed = time.perf_counter() - started
        await output.close()
        failed = [o for r in results for o in r if o.kind != "delivered"]
        if failed:
            raise RuntimeError(f"{config['type']}: {len(failed)} not delivered: {failed[0].error}")
        return elapsed

    return asyncio.run(go())


def _durable(store: Any, config: dict[str, Any], alerts: list[Any]) -> tuple[float, float]:
    from mcpsift.streams.outbox import Dispatcher, Outbox
    from mcpsift.streams.sinks import AlertSink
    from mcpsift.streams.sinks.outputs import parse_output_configs

    configs = parse_output_configs([{**config, "name": f"bench-{time.monotonic_ns()}"}])
    name = configs[0].output_name
    dispatcher = Dispatcher(store, configs, poll_s=0.05)
    started = time.perf_counter()
    sink = AlertSink(store, outbox=Outbox(store, configs))
    for alert in alerts:
        sink.add(alert)
    sink.flush()
    enqueue_s = time.perf_counter() - started
    started = time.perf_counter()
    dispatcher.start()
    try:
        deadline = time.monotonic() + 600
        while store.delivery_summary().get(name, {}).get("delivered", 0) < len(alerts):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: not all delivered after 600 s: {dispatcher.status()}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        dispatcher.stop()
    return enqueue_s, elapsed


def run(n: int = 2_000, only: Optional[list[str]] = None, data_dir: Optional[str] = None) -> dict[str, Any]:
    from mcpsift.store import Store

    alerts = _alerts(n)
    results = []
    with tempfile.TemporaryDirectory(prefix="mcpsift-bench-outputs-") as tmp:
        tmp_path = Path(tmp)
        targets = _targets(tmp_path)
        names = only or list(targets)
        unknown = sorted(set(names) - set(targets))
        if unknown:
            raise SystemExit(f"unknown output(s) {', '.join(unknown)}; choose from {', '.join(targets)}")
        store = Store(f"chdb://{data_dir or tmp_path / 'clickhouse'}", "bench_outputs")
        store.migrate()
        try:
            for name in names:
                config, receiver = targets[name]()
                try:
                    direct_s = _direct(config, alerts)
                    store.command(f"TRUNCATE TABLE {store.database}.deliveries")
                    enqueue_s, durable_s = _durable(store, config, alerts)
                finally:
                    if receiver is not None:
                        receiver.stop()
                results.append(
                    {
                        "output": name,
                        "alerts": n,
                        "direct_alerts_per_s": round(n / direct_s),
                        "durable_alerts_per_s": round(n / durable_s),
                        "ratio_durable_vs_direct": round(direct_s / durable_s, 3),
                        "store_and_enqueue_alerts_per_s": round(n / enqueue_s),
                    }
                )
        finally:
            store.drop_database()
            store.close()
    return {"alerts": n, "results": results}


def _print_table(r: dict[str, Any]) -> None:
    print(f"SIEM outputs: {r['alerts']:,} alerts each to a loopback receiver (batch 100, concurrency 2)")
    print(f"  {'output':<16} {'direct/s':>10} {'durable/s':>10} {'ratio':>7} {'store+enqueue/s':>16}")
    for res in r["results"]:
        print(
            f"  {res['output']:<16} {res['direct_alerts_per_s']:>10,} {res['durable_alerts_per_s']:>10,} "
            f"{res['ratio_durable_vs_direct']:>6.3f}x {res['store_and_enqueue_alerts_per_s']:>16,}"
        )


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="Delivered alerts/s per SIEM output, direct and through the outbox.")
    ap.add_argument("--alerts", "--events", dest="alerts", type=int, default=2_000, help="alerts per output")
    ap.add_argument("--only", help="comma-separated outputs (default: all)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    result = run(args.alerts, args.only.split(",") if args.only else None)
    return emit(result, args.json, _print_table)


if __name__ == "__main__":
    main()
