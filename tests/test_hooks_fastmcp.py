"""The fastmcp hook, on fastmcp's own middleware API: a real FastMCP server
driven by fastmcp's real client (in process), and the same server over
streamable HTTP (uvicorn, loopback) with the handshake protocol, so the
session events show too."""

from __future__ import annotations

import socket
import threading
import time

import anyio
import orjson
import pytest

from mcpsift.canonical import arguments_hash, definition_hash
from mcpsift.collectors.build import flush_pending
from mcpsift.collectors.sink import ListSink
from mcpsift.events import decode_event

GITHUB = "ghp_" + "Zq9" * 12


def build(sink, **options):
    from fastmcp import FastMCP
    from fastmcp.exceptions import AuthorizationError, InsufficientScopeError, ToolError

    from mcpsift.collectors.fastmcp import install

    mcp = FastMCP("notes-mcp", version="0.3.0")

    @mcp.tool(annotations={"readOnlyHint": True})
    def search(query: str, token: str = "") -> str:
        """Search notes."""
        return f"3 notes match {query}"

    @mcp.tool
    def fail(why: str) -> str:
        """Always fails."""
        raise ToolError(f"failed: {why}")

    @mcp.tool
    def purge() -> str:
        """Admins only."""
        raise AuthorizationError("purge is for admins")

    @mcp.tool
    def export() -> str:
        """Needs a scope."""
        raise InsufficientScopeError(["notes:export"])

    @mcp.resource("notes://index", mime_type="text/plain")
    def index() -> str:
        return "index of notes"

    @mcp.prompt
    def brief(topic: str) -> str:
        return f"Brief on {topic}"

    middleware = install(mcp, sink, fingerprint_key=b"k", tenant="acme", **options)
    return mcp, middleware


async def exercise(client) -> dict:
    out = {"tools": [t.name for t in await client.list_tools()]}
    out["ok"] = await client.call_tool("search", {"query": "q3 plan", "token": GITHUB})
    for name, args in (("fail", {"why": "disk full"}), ("purge", {}), ("export", {})):
        try:
            await client.call_tool(name, args)
            out[name] = None
        except Exception as exc:  # fastmcp's client raises ToolError for an error result
            out[name] = exc
    out["resource"] = await client.read_resource("notes://index")
    out["prompt"] = await client.get_prompt("brief", {"topic": "roadmap"})
    return out


def check_common(events, sink_events_types_expected_prefix=None):
    for event in events:
        decode_event(orjson.dumps(event))
        assert event["source"] == {"kind": "server", "name": "notes-mcp", "version": "0.3.0"}
        assert event["tenant"] == "acme"
    assert GITHUB.encode() not in orjson.dumps(events)


def test_fastmcp_calls_in_process():
    from fastmcp import Client

    sink = ListSink()
    mcp, middleware = build(sink)

    async def main():
        async with Client(mcp) as client:
            return await exercise(client)

    out = anyio.run(main)
    flush_pending()  # events are built off the request path; this loop has ended
    assert out["tools"] == ["search", "fail", "purge", "export"]
    assert all(out[name] is not None for name in ("fail", "purge", "export"))
    events = sink.events
    check_common(events)
    by_type = [e["type"] for e in events if e["type"] != "mcp.request"]
    assert by_type == [
        "mcp.tools_list", "mcp.tool_call", "mcp.tool_call", "mcp.tool_call", "mcp.tool_call",
        "mcp.resource_read", "mcp.prompt_get",
    ]
    listed = next(e for e in events if e["type"] == "mcp.tools_list")
    tools = {t["name"]: t for t in listed["tools"]}
    for tool in tools.values():
        assert tool["definition_hash"] == definition_hash(tool)
    assert tools["search"]["annotations"]["readOnlyHint"] is True

    calls = {e["tool"]["name"]: e for e in events if e["type"] == "mcp.tool_call"}
    ok = calls["search"]
    assert ok["tool"]["arguments"] == {"query": "q3 plan", "token": "[REDACTED:token]"}
    assert ok["tool"]["arguments_hash"] == arguments_hash({"query": "q3 plan", "token": GITHUB})
    assert ok["tool"]["definition_hash"] == tools["search"]["definition_hash"]
    assert ok["tool"]["annotations"] == tools["search"]["annotations"]
    assert ok["tool"]["result"]["is_error"] is False and ok["tool"]["result"]["size"] > 0
    assert ok["outcome"]["status"] == "ok"
    assert calls["fail"]["outcome"]["status"] == "error"
    assert calls["fail"]["outcome"]["error"] == "failed: disk full"
    assert calls["purge"]["outcome"]["status"] == "denied"
    assert calls["purge"]["outcome"]["reason"] == "forbidden"
    assert calls["export"]["outcome"] | {"duration_ms": 0} == {
        "status": "denied", "reason": "insufficient_scope", "error": calls["export"]["outcome"]["error"], "duration_ms": 0,
    }
    resource = next(e for e in events if e["type"] == "mcp.resource_read")
    assert resource["resource"] == {"uri": "notes://index", "mime_type": "text/plain", "size": len("index of notes")}
    prompt = next(e for e in events if e["type"] == "mcp.prompt_get")
    assert prompt["prompt"] == {"name": "brief"} and prompt["attributes"]["arguments"] == {"topic": "roadmap"}
    assert middleware.stats["failed"] == 0 and middleware.stats["submitted"] == len(events)


def test_fastmcp_over_http_reports_the_session():
    import uvicorn
    from fastmcp import Client
    from fastmcp.client.transports import StreamableHttpTransport

    sink = ListSink()
    mcp, _ = build(sink, server_resource="http://127.0.0.1/mcp")
    app = mcp.http_app(path="/mcp")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    try:

        async def main():
            transport = StreamableHttpTransport(f"http://127.0.0.1:{port}/mcp", headers={"User-Agent": "notes-cli/1"})
            async with Client(transport, mode="legacy") as client:
                await client.call_tool("search", {"query": "x"})

        anyio.run(main)
        deadline = time.monotonic() + 10
        while not any(e["type"] == "mcp.session_end" for e in sink.events) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    events = sink.events
    check_common(events)
    types = [e["type"] for e in events]
    assert types[0] == "mcp.session_start" and types[-1] == "mcp.session_end" and "mcp.tool_call" in types
    start = events[0]
    assert start["session"]["transport"] == "streamable-http"
    assert len(start["session"]["id"]) >= 16
    assert start["network"] == {"client_ip": "127.0.0.1", "user_agent": "notes-cli/1"}
    call = next(e for e in events if e["type"] == "mcp.tool_call")
    assert call["session"] == start["session"]


def test_install_needs_a_fastmcp_server():
    from mcpsift.collectors.fastmcp import install

    with pytest.raises(TypeError, match="fastmcp.FastMCP"):
        install(object(), ListSink())
