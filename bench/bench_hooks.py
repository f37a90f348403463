"""Hook overhead: what the SDK middleware adds to a tool call.

Two identical in-process MCP SDK servers with one trivial tool (``echo``),
one with the mcpsift middleware installed (``install(server, sink)``, with a
fingerprint key and a server resource as a real deployment has), one without;
a real SDK client connected to each, in the same process and the same run.
Calls alternate between the two in blocks (``--block`` calls each, the order
swapped every block) so drift of the machine hits both alike; ``--aa`` runs
two plain servers the same way, to show the noise floor. The tool is async
by default (``--sync-tool``: a plain ``def``, which the SDK runs in a worker
thread, a heavier call and so a smaller share for the hook). The sink stands for a publisher's bounded queue: ``submit``
appends to a ``deque``. The hook builds its events off the request path
(``defer``); each block's deferred building runs inside that block's time.

Reported per transport mode:

* ``legacy``: the handshake protocol over the SDK's in-memory JSON-RPC
  streams (``Client(server, mode="legacy")``: framing, a dispatcher, a
  connection with a session -- what a stdio or HTTP server does per message);
* ``modern``: the 2026-07-28 per-request path through the SDK's direct
  dispatcher (no JSON-RPC framing: the cheapest possible call, so the hook's
  share is largest);

tool calls per CPU second (the process's CPU time over each block, including
the deferred building of that block's events -- a server's capacity), p50/p99
latency of each server, the µs the hook adds at p50 and p99 and the
throughput ratio (hooked / plain). Finally the hook's own CPU
time per call, measured by calling the middleware directly with a stub
``call_next`` (no transport at all).

Goal (issue 4): <= 25 µs added at p50, throughput within 10 %.

Usage: ``python bench/bench_hooks.py [--calls 5000] [--block 500] [--mode both] [--aa] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import statistics
import time
from types import SimpleNamespace
from typing import Any, Optional

try:  # as a module: bench.bench_hooks (or mcpsift.bench.bench_hooks)
    from .report import emit
except ImportError:  # as a script: python bench/bench_hooks.py
    from report import emit  # type: ignore[no-redef]

__all__ = ["run", "main"]

ARGUMENTS = {"text": "hello from the benchmark", "repeat": 1}


class QueueSink:
    """A publisher's enqueue: append to a bounded deque, never block. Bounded
    small, as a publisher that keeps up holds few events at a time."""

    def __init__(self, maxlen: int = 1024) -> None:
        self.queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self.submitted = 0

    def submit(self, event: dict[str, Any]) -> bool:
        self.queue.append(event)
        self.submitted += 1
        return True


def _server(hooked: bool, sink: QueueSink, sync_tool: bool = False) -> Any:
    from mcp.server.mcpserver import MCPServer

    from mcpsift.collectors.mcp_sdk import install

    server = MCPServer("bench-mcp", version="1.0")

    if sync_tool:

        @server.tool(annotations={"readOnlyHint": True})
        def echo(text: str, repeat: int = 1) -> str:
            """Echo the text."""
            return text * repeat

    else:

        @server.tool(annotations={"readOnlyHint": True})
        async def echo(text: str, repeat: int = 1) -> str:  # type: ignore[misc]
            """Echo the text."""
            return text * repeat

    if hooked:
        install(
            server,
            sink,
            server_resource="https://mcp.bench.example/mcp",
            tenant="bench",
            fingerprint_key=b"bench-key",
        )
    return server


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _measure_mode(
    mode: str, calls: int, block: int, warmup: int, aa: bool = False, sync_tool: bool = False
) -> dict[str, Any]:
    from mcp import Client

    from mcpsift.collectors.build import pending_count

    sink = QueueSink()
    # aa: two plain servers, to see how far apart identical servers measure (the noise floor)
    servers = {"plain": _server(False, sink, sync_tool), "hooked": _server(not aa, sink, sync_tool)}
    client_mode = "legacy" if mode == "legacy" else "auto"
    latencies: dict[str, list[float]] = {"plain": [], "hooked": []}
    busy: dict[str, float] = {"plain": 0.0, "hooked": 0.0}
    async with Client(servers["plain"], mode=client_mode) as plain, Client(servers["hooked"], mode=client_mode) as hooked:
        clients = {"plain": plain, "hooked": hooked}
        for name, client in clients.items():
            await client.list_tools()
            for _ in range(warmup):
                await client.call_tool("echo", ARGUMENTS)
        sink.queue.clear()
        sink.submitted = 0
        gc.collect()
        done = 0
        swap = False
        while done < calls:
            n = min(block, calls - done)
            order = ("hooked", "plain") if swap else ("plain", "hooked")
            for name in order:
                client = clients[name]
                record = latencies[name].append
                started = time.process_time()
                for _ in range(n):
                    t0 = time.perf_counter_ns()
                    await client.call_tool("echo", ARGUMENTS)
                    record((time.perf_counter_ns() - t0) / 1000.0)
                # let the loop build what this block deferred, as a running server would:
                # that CPU belongs to this block, not to the next one
                while pending_count():
                    await asyncio.sleep(0.001)
                busy[name] += time.process_time() - started
            done += n
            swap = not swap
    out: dict[str, Any] = {"calls_each": calls, "events": sink.submitted}
    for name in ("plain", "hooked"):
        values = sorted(latencies[name])
        out[f"{name}_calls_per_s"] = len(values) / busy[name]
        out[f"{name}_p50_us"] = _percentile(values, 0.50)
        out[f"{name}_p99_us"] = _percentile(values, 0.99)
        out[f"{name}_mean_us"] = statistics.fmean(values)
    out["added_p50_us"] = out["hooked_p50_us"] - out["plain_p50_us"]
    out["added_p99_us"] = out["hooked_p99_us"] - out["plain_p99_us"]
    out["throughput_ratio"] = out["hooked_calls_per_s"] / out["plain_calls_per_s"]
    return out


async def _measure_hook_cpu(iterations: int) -> dict[str, Any]:
    """The middleware called directly: its own cost per tool call, no transport."""
    from mcpsift.collectors.mcp_sdk import McpsiftMiddleware

    sink = QueueSink(maxlen=10_000)
    middleware = McpsiftMiddleware(
        sink,
        server_name="bench-mcp",
        server_resource="https://mcp.bench.example/mcp",
        tenant="bench",
        fingerprint_key=b"bench-key",
    )
    connection = SimpleNamespace(state={}, session_id="4f6c1e0a9b3d4c518f2e0d8b7a6c5e41", initialize_accepted=True)
    ctx = SimpleNamespace(
        method="tools/call",
        params={"name": "echo", "arguments": ARGUMENTS},
        request_id=1,
        protocol_version="2025-11-25",
        request=None,
        session=SimpleNamespace(_connection=connection),
    )
    result = {"content": [{"type": "text", "text": ARGUMENTS["text"]}], "structuredContent": {"result": ARGUMENTS["text"]}, "isError": False}

    async def call_next(_ctx: Any) -> dict[str, Any]:
        return result

    async def passthrough(ctx: Any, nxt: Any) -> Any:
        return await nxt(ctx)

    async def loop(fn: Any, n: int) -> float:
        started = time.perf_counter_ns()
        for _ in range(n):
            await fn(ctx, call_next)
        return (time.perf_counter_ns() - started) / n / 1000.0

    await loop(middleware, 2_000)
    best_hook = min([await loop(middleware, iterations) for _ in range(3)])
    best_base = min([await loop(passthrough, iterations) for _ in range(3)])
    return {"hook_cpu_us_per_call": best_hook - best_base, "iterations": iterations, "failed": middleware.stats["failed"]}


def run(
    calls: int = 5_000,
    block: int = 500,
    mode: str = "both",
    warmup: int = 300,
    progress: bool = True,
    aa: bool = False,
    sync_tool: bool = False,
) -> dict[str, Any]:
    modes = ("legacy", "modern") if mode == "both" else (mode,)
    result: dict[str, Any] = {}
    for name in modes:
        if progress:
            print(f"  measuring {name}: {calls:,} calls per server in blocks of {block} ...", flush=True)
        result[name] = asyncio.run(_measure_mode(name, calls, block, warmup, aa, sync_tool))
    result["hook_cpu"] = asyncio.run(_measure_hook_cpu(20_000))
    return result


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", "--events", dest="calls", type=int, default=5_000, help="tool calls per server (default 5000)")
    ap.add_argument("--block", type=int, default=500, help="calls per interleaved block (default 500)")
    ap.add_argument("--mode", choices=("legacy", "modern", "both"), default="both")
    ap.add_argument("--aa", action="store_true", help="calibrate: both servers without the hook (the noise floor)")
    ap.add_argument("--sync-tool", action="store_true", help="a plain `def` tool (the SDK runs it in a worker thread)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    result = run(args.calls, args.block, args.mode, progress=not args.json, aa=args.aa, sync_tool=args.sync_tool)
    return emit(result, args.json, _print_table)


def _print_table(result: dict[str, Any]) -> None:
    for mode in ("legacy", "modern"):
        if mode not in result:
            continue
        r = result[mode]
        print(f"{mode} ({r['calls_each']:,} calls each, {r['events']:,} events)")
        print(f"  {'plain  calls/s, p50, p99':34s} {r['plain_calls_per_s']:>9,.0f}/s {r['plain_p50_us']:>8.1f} µs {r['plain_p99_us']:>8.1f} µs")
        print(f"  {'hooked calls/s, p50, p99':34s} {r['hooked_calls_per_s']:>9,.0f}/s {r['hooked_p50_us']:>8.1f} µs {r['hooked_p99_us']:>8.1f} µs")
        print(f"  {'added at p50 / p99':34s} {r['added_p50_us']:>8.1f} µs / {r['added_p99_us']:.1f} µs")
        print(f"  {'throughput hooked / plain':34s} {r['throughput_ratio']:>8.3f}")
    cpu = result["hook_cpu"]
    print(f"{'hook CPU per tool call (direct)':36s} {cpu['hook_cpu_us_per_call']:>8.2f} µs")


if __name__ == "__main__":
    main()
