"""The MCP SDK middleware (with the auditing verifier and the ASGI middleware)
on a real SDK server over streamable HTTP (uvicorn, loopback), JWT bearer auth
with keys generated here, driven by the SDK's real client.

Every event must pass ``decode_event`` and no raw token (nor a secret passed
as an argument) may appear in any serialized event.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import orjson
import pytest

from mcpsift.canonical import arguments_hash, definition_hash
from mcpsift.collectors import fingerprint_token
from mcpsift.collectors.build import flush_pending
from mcpsift.collectors.sink import ListSink
from mcpsift.events import decode_event
from tests.helpers.mcp_server import (
    FINGERPRINT_KEY,
    ISSUER,
    SERVER_NAME,
    TENANT,
    USER_AGENT,
    JWTIssuer,
    drive_session,
    http_client,
    running_server,
)

API_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
PASSWORD = "Sup3rS3cret!"


@pytest.fixture(scope="module")
def crm():
    sink = ListSink()
    issuer = JWTIssuer()
    with running_server(sink, issuer) as server:
        yield server, sink, issuer


@pytest.fixture
def fresh(crm):
    server, sink, issuer = crm
    sink.events.clear()
    return server, sink, issuer


def wait_for(sink: ListSink, predicate, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(sink.events):
            return list(sink.events)
        time.sleep(0.02)
    raise AssertionError(f"events never matched; got {[e['type'] for e in sink.events]}")


def assert_valid_and_clean(events: list[dict[str, Any]], *secrets: str) -> None:
    for event in events:
        decode_event(orjson.dumps(event))
    blob = orjson.dumps(events)
    for secret in secrets:
        assert secret.encode() not in blob
        for part in secret.split("."):  # no segment of a JWT either (its signature is the secret part)
            if len(part) > 20:
                assert part.encode() not in blob


def assert_envelope(event: dict[str, Any], server) -> None:
    assert event["schema"] == "mcpsift.event/1"
    assert event["tenant"] == TENANT
    assert event["source"] == {"kind": "server", "name": SERVER_NAME, "instance": "crm-mcp-test", "version": "2.4.1"}
    assert event["server"] == {"name": SERVER_NAME, "resource": server.resource}
    assert len(event["event_id"]) == 36 and event["event_id"][14] == "7"  # a UUIDv7
    assert event["time"].endswith("Z") and len(event["time"]) == 24


def test_a_session_emits_the_exact_events(fresh):
    server, sink, issuer = fresh
    token = issuer.mint(audience=server.resource, scopes=["crm:read"])
    received = anyio.run(drive_session, server, token)
    assert received["ok"].is_error is False
    assert received["error"].is_error is True
    assert received["denied"] is not None and received["denied"].error.code == -32003

    events = wait_for(sink, lambda evs: any(e["type"] == "mcp.session_end" for e in evs))
    assert_valid_and_clean(events, token, API_KEY, PASSWORD)
    mcp_events = [e for e in events if e["type"].startswith("mcp.")]
    assert [e["type"] for e in mcp_events] == [
        "mcp.session_start",
        "mcp.tools_list",
        "mcp.tool_call",
        "mcp.tool_call",
        "mcp.tool_call",
        "mcp.resource_read",
        "mcp.prompt_get",
        "mcp.session_end",
    ]
    fingerprint = fingerprint_token(token, FINGERPRINT_KEY)
    assert fingerprint.startswith("hmac-sha256:")
    principal = {
        "subject": "dana@acme.example",
        "issuer": ISSUER,
        "client_id": "https://assistant.example.com/oauth/client.json",
    }
    session_ids = {e["session"]["id"] for e in mcp_events}
    assert len(session_ids) == 1 and len(session_ids.pop()) == 32
    for event in mcp_events:
        assert_envelope(event, server)
        assert event["principal"] == principal
        assert event["session"]["transport"] == "streamable-http"
        assert event["session"]["protocol_version"] == received["protocol_version"]
        assert event["network"] == {"client_ip": "127.0.0.1", "user_agent": USER_AGENT}
        if event["type"] != "mcp.session_end":
            assert event["token"]["fingerprint"] == fingerprint
            assert event["token"]["alg"] == "RS256"
            assert event["token"]["audience"] == [server.resource]
            assert event["token"]["scopes"] == ["crm:read"]
            assert event["outcome"]["duration_ms"] >= 0

    start, listed, ok, error, denied, resource, prompt, end = mcp_events
    assert start["attributes"]["client_info"]["name"] == "mcp"
    assert start["outcome"]["status"] == "ok"

    tools = {t["name"]: t for t in listed["tools"]}
    assert sorted(tools) == ["delete_contact", "explode", "find_contact"]
    for tool in tools.values():
        assert tool["definition_hash"] == definition_hash(tool)
    assert tools["find_contact"]["annotations"] == {"readOnlyHint": True, "openWorldHint": False}
    assert tools["find_contact"]["input_schema"]["required"] == ["query"]

    assert ok["tool"]["name"] == "find_contact"
    assert ok["tool"]["arguments"] == {"query": "Jordan Lee", "api_key": "[REDACTED:api_key]"}
    assert ok["tool"]["arguments_hash"] == arguments_hash({"query": "Jordan Lee", "api_key": API_KEY})
    assert ok["tool"]["annotations"] == tools["find_contact"]["annotations"]
    assert ok["tool"]["definition_hash"] == tools["find_contact"]["definition_hash"]
    assert ok["tool"]["result"]["is_error"] is False
    assert ok["tool"]["result"]["size"] > 0 and ok["tool"]["result"]["hash"].startswith("sha256:")
    assert "excerpt" not in ok["tool"]["result"]  # off by default
    assert ok["outcome"]["status"] == "ok" and "error" not in ok["outcome"]

    assert error["tool"]["name"] == "explode"
    assert error["tool"]["arguments"] == {"reason": "password=[REDACTED:password]"}
    assert error["tool"]["result"]["is_error"] is True
    assert error["outcome"]["status"] == "error"
    assert "exploded: password=[REDACTED:password]" in error["outcome"]["error"]
    assert error["tool"]["definition_hash"] == tools["explode"]["definition_hash"]

    assert denied["tool"]["name"] == "delete_contact"
    assert denied["tool"]["annotations"] == {"destructiveHint": True}
    assert denied["outcome"]["status"] == "denied"
    assert denied["outcome"]["reason"] == "insufficient_scope"
    assert "result" not in denied["tool"]

    assert resource["resource"] == {
        "uri": "crm://contacts/readme",
        "mime_type": "text/plain",
        "size": len("The CRM contacts directory."),
    }
    assert resource["outcome"]["status"] == "ok"
    assert prompt["prompt"] == {"name": "summarize_account"}
    assert prompt["attributes"]["arguments"] == {"account": "ACME"}
    assert end["session"] == start["session"]
    assert end["attributes"]["session_duration_ms"] > 0

    # one auth.token per HTTP request that carried the token, all accepted, from the header
    auth = [e for e in events if e["type"] == "auth.token"]
    assert len(auth) >= 8
    for event in auth:
        assert_envelope(event, server)
        assert event["outcome"]["status"] == "ok" and "reason" not in event["outcome"]
        assert event["attributes"] == {"token_location": "header"}
        assert event["token"]["fingerprint"] == fingerprint
        assert event["token"]["issuer"] == ISSUER
        assert event["token"]["jti"] == start["token"]["jti"]
        assert event["principal"] == principal
    # once the session exists, the verifier's events carry its id (same Kafka key as the session)
    assert {e["session"]["id"] for e in auth if "session" in e} == {start["session"]["id"]}
    assert not [e for e in events if e["type"] == "auth.challenge"]


async def _initialize(server, token: str, url: str | None = None) -> None:
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with http_client(token) as http:
        async with streamable_http_client(url or server.url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                with anyio.fail_after(10):
                    await session.initialize()


def test_a_token_for_another_audience_gets_401_and_is_reported(fresh):
    server, sink, issuer = fresh
    token = issuer.mint(audience="https://mcp.acme.example/billing")
    with pytest.raises(BaseException) as raised:  # the SDK client fails the handshake
        anyio.run(_initialize, server, token)
    assert "error" in repr(raised.value).lower()

    events = wait_for(sink, lambda evs: {"auth.token", "auth.challenge"} <= {e["type"] for e in evs})
    assert_valid_and_clean(events, token)
    assert not [e for e in events if e["type"].startswith("mcp.")]
    verdict = next(e for e in events if e["type"] == "auth.token")
    assert verdict["outcome"]["status"] == "denied"
    assert verdict["outcome"]["reason"] == "wrong_audience"
    assert verdict["attributes"] == {"token_location": "header", "reason_basis": "claims"}
    assert verdict["token"]["audience"] == ["https://mcp.acme.example/billing"]
    assert verdict["server"]["resource"] == server.resource

    challenge = next(e for e in events if e["type"] == "auth.challenge")
    assert_envelope(challenge, server)
    metadata = f"http://127.0.0.1:{server.port}/.well-known/oauth-protected-resource/mcp"
    assert challenge["attributes"]["http_status"] == 401
    assert challenge["attributes"]["resource_metadata"] == metadata
    assert f'resource_metadata="{metadata}"' in challenge["attributes"]["www_authenticate"]
    assert challenge["outcome"] == {"status": "denied", "reason": "invalid_token"}
    assert challenge["token"]["fingerprint"] == verdict["token"]["fingerprint"]
    assert challenge["network"]["user_agent"] == USER_AGENT


def test_a_token_without_the_required_scope_gets_403(fresh):
    server, sink, issuer = fresh
    token = issuer.mint(audience=server.resource, scopes=["profile"])
    with pytest.raises(BaseException):
        anyio.run(_initialize, server, token)
    events = wait_for(sink, lambda evs: {"auth.token", "auth.challenge"} <= {e["type"] for e in evs})
    assert_valid_and_clean(events, token)
    verdict = next(e for e in events if e["type"] == "auth.token")
    assert verdict["outcome"]["status"] == "denied"
    assert verdict["outcome"]["reason"] == "insufficient_scope"
    challenge = next(e for e in events if e["type"] == "auth.challenge")
    assert challenge["attributes"]["http_status"] == 403
    assert challenge["outcome"]["reason"] == "insufficient_scope"


def test_a_token_in_the_query_string_is_flagged(fresh):
    server, sink, issuer = fresh
    token = issuer.mint(audience=server.resource)

    async def post() -> int:
        async with http_client(None) as http:  # no Authorization header: the token rides in the URL
            response = await http.post(
                server.url,
                params={"access_token": token},
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"Accept": "application/json, text/event-stream"},
            )
            return response.status_code

    assert anyio.run(post) == 401
    events = wait_for(sink, lambda evs: len(evs) >= 2)
    assert_valid_and_clean(events, token)
    flagged = next(e for e in events if e["type"] == "auth.token")
    assert flagged["attributes"]["token_location"] == "query"
    assert flagged["attributes"]["query_parameter"] == "access_token"
    assert flagged["attributes"]["http_status"] == 401
    assert flagged["token"]["fingerprint"] == fingerprint_token(token, FINGERPRINT_KEY)
    assert flagged["token"]["jti"] and flagged["token"]["alg"] == "RS256"
    assert "outcome" not in flagged  # nothing verified it here
    challenge = next(e for e in events if e["type"] == "auth.challenge")
    assert challenge["attributes"]["http_status"] == 401
    assert "token" not in challenge  # no Authorization header was sent


# -- in-process: install, failures, options, the 2026-07-28 protocol ------------------


def _server(**tool_kwargs):
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("notes-mcp", version="0.9")

    @server.tool(annotations={"readOnlyHint": True})
    def search(query: str) -> str:
        """Search notes."""
        return f"3 notes about {query}; the deploy key is AKIAIOSFODNN7EXAMPLF and " + "x" * 6000

    return server


def test_install_is_one_line_and_goes_after_opentelemetry():
    from mcp.server.lowlevel.server import Server

    from mcpsift.collectors.mcp_sdk import McpsiftMiddleware, install

    server = _server()
    sink = ListSink()
    middleware = install(server, sink)
    chain = server.middleware
    assert type(chain[0]).__name__ == "OpenTelemetryMiddleware"
    assert chain[1] is middleware and isinstance(middleware, McpsiftMiddleware)
    assert middleware.events.source == {"kind": "server", "name": "notes-mcp", "version": "0.9"}
    with pytest.raises(ValueError, match="already installed"):
        install(server, sink)
    with pytest.raises(TypeError, match="fastmcp"):
        install(object(), sink)
    with pytest.raises(TypeError, match="submit"):
        install(Server("x"), object())  # not a sink


def test_a_tool_called_before_any_listing_still_gets_its_definition_hash():
    from mcp import Client

    from mcpsift.collectors.mcp_sdk import install

    server = _server()
    sink = ListSink()
    install(server, sink, include_result_excerpt=True, max_string_bytes=1024)

    async def call() -> None:
        async with Client(server, mode="legacy") as client:
            await client.call_tool("search", {"query": "deploy"})

    anyio.run(call)
    flush_pending()  # events are built off the request path; this loop has ended
    call_event = next(e for e in sink.events if e["type"] == "mcp.tool_call")
    decode_event(orjson.dumps(call_event))
    tools = anyio.run(server.list_tools)
    expected = definition_hash(
        {
            "name": "search",
            "description": "Search notes.",
            "input_schema": tools[0].input_schema,
            "annotations": {"readOnlyHint": True},
        }
    )
    assert call_event["tool"]["definition_hash"] == expected
    assert call_event["tool"]["annotations"] == {"readOnlyHint": True}
    excerpt = call_event["tool"]["result"]["excerpt"]
    assert excerpt.startswith("3 notes about deploy; the deploy key is [REDACTED:aws_access_key] and xxx")
    assert len(excerpt.encode()) <= 1024 and "[TRUNCATED:" in excerpt
    assert "AKIAIOSFODNN7EXAMPLF" not in orjson.dumps(sink.events).decode()
    # the client lists tools only after the call (to validate output): the hash came from the lookup
    types = [e["type"] for e in sink.events]
    assert types[:2] == ["mcp.session_start", "mcp.tool_call"] and types[-1] == "mcp.session_end"
    assert sink.events[0]["session"]["transport"] == "stdio"


class _RaisingSink:
    def __init__(self) -> None:
        self.types: list[str] = []

    def submit(self, event):
        self.types.append(event["type"])
        raise RuntimeError("sink is broken")


class _FullSink:
    def submit(self, event):
        return False


def test_a_failing_sink_or_hook_never_breaks_the_server(caplog):
    from mcp import Client

    from mcpsift.collectors.mcp_sdk import install

    async def use(server) -> list[bool]:
        async with Client(server, mode="legacy") as client:
            results = []
            for _ in range(3):
                results.append((await client.call_tool("search", {"query": "q"})).is_error)
            return results

    broken = _RaisingSink()
    server = _server()
    middleware = install(server, broken)
    with caplog.at_level(logging.WARNING, logger="mcpsift.collectors"):
        assert anyio.run(use, server) == [False, False, False]
        flush_pending()
    assert broken.types.count("mcp.tool_call") == 3 and broken.types[0] == "mcp.session_start"
    assert middleware.stats["failed"] == len(broken.types) and middleware.stats["submitted"] == 0
    warnings = [r for r in caplog.records if "audit event was lost" in r.getMessage()]
    assert len(warnings) == 1 and "RuntimeError" in warnings[0].getMessage()

    server = _server()
    middleware = install(server, _FullSink())
    assert anyio.run(use, server) == [False, False, False]
    flush_pending()
    assert middleware.stats["submitted"] == 0 and middleware.stats["failed"] == 0
    assert middleware.stats["dropped"] >= 5  # session_start, 3 calls, session_end (+ the client's listings)

    # an error while building an event is counted, logged once, and the call still answers
    server = _server()
    sink = ListSink()
    middleware = install(server, sink)

    def explode(*args, **kwargs):
        raise ValueError("bug in redaction")

    middleware.events.redactor.redact_arguments = explode
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mcpsift.collectors"):
        assert anyio.run(use, server) == [False, False, False]
        flush_pending()
    assert middleware.stats["failed"] == 3
    assert "mcp.tool_call" not in [e["type"] for e in sink.events]
    assert sink.events[0]["type"] == "mcp.session_start" and sink.events[-1]["type"] == "mcp.session_end"
    lost = [r.getMessage() for r in caplog.records if "audit event was lost" in r.getMessage()]
    assert len(lost) == 1 and "tools/call" in lost[0] and "bug in redaction" not in lost[0]


def test_the_2026_protocol_without_sessions_still_reports_calls():
    from mcp import Client

    from mcpsift.collectors.mcp_sdk import install

    server = _server()
    sink = ListSink()
    install(server, sink, transport="other")

    async def use() -> None:
        async with Client(server) as client:  # in-process, modern per-request envelopes
            await client.list_tools()
            await client.call_tool("search", {"query": "q"})
            await client.call_tool("missing_tool", {})

    anyio.run(use)
    flush_pending()
    for event in sink.events:
        decode_event(orjson.dumps(event))
    types = [e["type"] for e in sink.events]
    assert "mcp.session_start" not in types and "mcp.session_end" not in types
    calls = [e for e in sink.events if e["type"] == "mcp.tool_call"]
    assert [c["tool"]["name"] for c in calls] == ["search", "missing_tool"]
    assert calls[0]["session"] == {"transport": "other", "protocol_version": "2026-07-28"}
    assert calls[0]["outcome"]["status"] == "ok"
    assert calls[1]["outcome"]["status"] == "error"
    assert "definition_hash" not in calls[1]["tool"]


def test_events_are_built_after_the_response_in_order(monkeypatch):
    from mcp import Client

    from mcpsift.collectors import build
    from mcpsift.collectors.mcp_sdk import install

    monkeypatch.setattr(build, "DEFER_DELAY_S", 0.3)  # long enough to look before the build runs
    server = _server()
    sink = ListSink()
    install(server, sink)
    seen: dict[str, object] = {}

    async def use() -> None:
        async with Client(server, mode="legacy") as client:
            for query in ("a", "b", "c"):
                await client.call_tool("search", {"query": query})
            seen["right_after"] = [e["type"] for e in sink.events]
            seen["pending"] = build.pending_count()
            await anyio.sleep(0.6)
            seen["later"] = [e["tool"]["arguments"]["query"] for e in sink.events if e["type"] == "mcp.tool_call"]

    anyio.run(use)
    flush_pending()
    assert seen["right_after"] == [] and seen["pending"] >= 4  # nothing built on the request path
    assert seen["later"] == ["a", "b", "c"]  # built by the loop, in order
    times = [e["time"] for e in sink.events]
    assert times == sorted(times) and sink.events[-1]["type"] == "mcp.session_end"

    # defer=False: built before the hook returns
    server = _server()
    sink = ListSink()
    install(server, sink, defer=False)

    async def direct() -> list[str]:
        async with Client(server, mode="legacy") as client:
            await client.call_tool("search", {"query": "now"})
            return [e["type"] for e in sink.events]

    assert "mcp.tool_call" in anyio.run(direct)
    # no running loop (a sync caller): built at once
    factory = build.EventFactory(ListSink(), server_name="x", fingerprint_key=b"k")
    built = []
    factory.later(built.append, "now")
    assert built == ["now"]
