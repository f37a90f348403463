"""The ASGI middleware in front of a real Starlette app, driven by a real
httpx client over its ASGI transport (which lets a test choose the TCP peer
address): challenges, tokens in the query string, client ip through trusted
proxies, and what it hands to the hooks inside the request. The same
middleware in front of the SDK server under uvicorn is in test_hooks_mcp_sdk.py."""

from __future__ import annotations

import contextlib

import anyio
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from mcpsift.collectors import fingerprint_token
from mcpsift.collectors.asgi import McpsiftASGIMiddleware, parse_www_authenticate
from mcpsift.collectors.build import client_ip, current_request, flush_pending, parse_networks
from mcpsift.collectors.sink import ListSink
from mcpsift.events import decode_event

METADATA = "https://mcp.acme.example/.well-known/oauth-protected-resource/crm"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkYW5hIiwianRpIjoiajEiLCJhdWQiOiJodHRwczovL21jcC5hY21lLmV4YW1wbGUvY3JtIn0.c2lnbmF0dXJlLXBhcnQtMTIzNDU2"
KEY = b"k-asgi"


async def whoami(request):
    info = current_request()
    return JSONResponse(
        {"client_ip": info.client_ip, "user_agent": info.user_agent, "session_id": info.session_id}
        if info is not None
        else None
    )


async def protected(request):
    return PlainTextResponse(
        "unauthorized",
        status_code=401,
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="expired", resource_metadata="{METADATA}"'},
    )


async def forbidden(request):
    return PlainTextResponse(
        "forbidden", status_code=403, headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="crm:write"'}
    )


async def boom(request):
    raise RuntimeError("handler crashed")


started = []


@contextlib.asynccontextmanager
async def lifespan(app):
    started.append(True)
    yield


def make_app(sink, **options):
    app = Starlette(
        routes=[
            Route("/mcp", whoami, methods=["GET", "POST"]),
            Route("/protected", protected, methods=["GET", "POST"]),
            Route("/forbidden", forbidden),
            Route("/boom", boom),
        ],
        lifespan=lifespan,
    )
    defaults = {"server_name": "crm-mcp", "server_resource": "https://mcp.acme.example/crm", "fingerprint_key": KEY}
    defaults.update(options)
    return McpsiftASGIMiddleware(app, sink, **defaults)


def request(app, method, path, *, peer="198.51.100.4", headers=None, params=None):
    async def go():
        transport = httpx.ASGITransport(app=app, client=(peer, 50123), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path, headers=headers, params=params)

    response = anyio.run(go)
    flush_pending()  # events are built off the request path; this loop has ended
    return response


def valid(events):
    for event in events:
        decode_event(orjson.dumps(event))
    return events


def test_401_and_403_become_challenges():
    sink = ListSink()
    app = make_app(sink)
    response = request(app, "POST", "/protected", headers={"Authorization": f"Bearer {JWT}", "User-Agent": "ua/1", "Mcp-Session-Id": "s-1"})
    assert response.status_code == 401 and response.text == "unauthorized"  # untouched
    (event,) = valid(sink.events)
    assert event["type"] == "auth.challenge"
    assert event["outcome"] == {"status": "denied", "reason": "invalid_token"}
    assert event["attributes"] == {
        "http_status": 401,
        "www_authenticate": f'Bearer error="invalid_token", error_description="expired", resource_metadata="{METADATA}"',
        "resource_metadata": METADATA,
        "http_method": "POST",
        "path": "/protected",
    }
    assert event["network"] == {"client_ip": "198.51.100.4", "user_agent": "ua/1"}
    assert event["session"] == {"id": "s-1", "transport": "streamable-http"}
    assert event["token"]["fingerprint"] == fingerprint_token(JWT, KEY)
    assert event["token"]["jti"] == "j1"
    assert JWT.encode() not in orjson.dumps(event)

    sink.events.clear()
    assert request(app, "GET", "/forbidden").status_code == 403
    (event,) = valid(sink.events)
    assert event["attributes"]["http_status"] == 403
    assert event["outcome"]["reason"] == "insufficient_scope"
    assert "resource_metadata" not in event["attributes"] and "token" not in event

    sink.events.clear()
    assert request(app, "GET", "/mcp").status_code == 200
    assert request(app, "GET", "/nowhere").status_code == 404
    assert sink.events == []


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"access_token": JWT}, "access_token"),
        ({"token": "Bearer opaque-abcdef123456"}, "token"),
        ({"q": "x", "whatever": JWT}, "whatever"),  # a JWT under any name
        ({"api_key": "k-123456789"}, "api_key"),
    ],
)
def test_a_token_in_the_query_string_is_flagged(params, parameter):
    sink = ListSink()
    app = make_app(sink)
    assert request(app, "GET", "/mcp", params=params).status_code == 200
    (event,) = valid(sink.events)
    raw = params[parameter].removeprefix("Bearer ")
    assert event["type"] == "auth.token"
    assert event["attributes"]["token_location"] == "query"
    assert event["attributes"]["query_parameter"] == parameter
    assert event["attributes"]["http_status"] == 200
    assert event["token"]["fingerprint"] == fingerprint_token(raw, KEY)
    assert "outcome" not in event
    assert raw.encode() not in orjson.dumps(event)


def test_ordinary_query_strings_are_not_flagged():
    sink = ListSink()
    app = make_app(sink)
    for params in ({"page": "2"}, {"q": "hello world"}, {"token": ""}):
        assert request(app, "GET", "/mcp", params=params).status_code == 200
    assert sink.events == []


def test_client_ip_honours_only_trusted_proxies():
    sink = ListSink()
    app = make_app(sink, trusted_proxies=["10.0.0.0/8", "2001:db8::/32"])

    def seen(peer, forwarded=None):
        headers = {"User-Agent": "agent/2", "Mcp-Session-Id": "abc"}
        if forwarded is not None:
            headers["X-Forwarded-For"] = forwarded
        return request(app, "GET", "/mcp", peer=peer, headers=headers).json()

    assert seen("10.0.0.5", "203.0.113.9, 10.0.0.7") == {"client_ip": "203.0.113.9", "user_agent": "agent/2", "session_id": "abc"}
    # a client-supplied entry left of the real one is not believed: right-most untrusted wins
    assert seen("10.0.0.5", "1.2.3.4, 203.0.113.9")["client_ip"] == "203.0.113.9"
    # an untrusted peer's X-Forwarded-For is ignored
    assert seen("198.51.100.4", "203.0.113.9")["client_ip"] == "198.51.100.4"
    assert seen("10.0.0.5")["client_ip"] == "10.0.0.5"
    assert seen("2001:db8::1", "[2001:db8::99]:443, 198.51.100.7:5555")["client_ip"] == "198.51.100.7"
    assert seen("10.0.0.5", "10.0.0.8, 10.0.0.9")["client_ip"] == "10.0.0.8"  # all trusted: the left-most

    untrusting = make_app(ListSink())
    assert request(untrusting, "GET", "/mcp", peer="10.0.0.5", headers={"X-Forwarded-For": "203.0.113.9"}).json()["client_ip"] == "10.0.0.5"

    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        make_app(ListSink(), trusted_proxies=["10.0.0.0/33"])
    with pytest.raises(TypeError, match="list of CIDRs"):
        make_app(ListSink(), trusted_proxies="10.0.0.0/8")


def test_client_ip_function():
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_ip("10.1.1.1", "198.51.100.1,10.2.2.2", trusted) == "198.51.100.1"
    assert client_ip("::ffff:10.1.1.1", "198.51.100.1", trusted) == "198.51.100.1"
    assert client_ip("192.0.2.1", "198.51.100.1", trusted) == "192.0.2.1"
    assert client_ip(None, "198.51.100.1", trusted) is None
    assert client_ip("10.1.1.1", "garbage, 10.2.2.2", trusted) == "garbage"  # what the proxy wrote, as is


def test_it_never_breaks_the_app():
    class Broken:
        def submit(self, event):
            raise RuntimeError("down")

    app = make_app(Broken())
    assert request(app, "GET", "/protected").status_code == 401
    assert request(app, "GET", "/boom").status_code == 500
    assert app.stats["failed"] == 1  # the sink raised on the challenge event

    # lifespan and other scopes pass through
    async def lifespan_roundtrip():
        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent = []

        async def receive():
            return messages.pop(0)

        async def send(message):
            sent.append(message["type"])

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        return sent

    started.clear()
    assert anyio.run(lifespan_roundtrip) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert started == [True]

    # a query token on a request whose handler crashes is still reported
    sink = ListSink()
    app = make_app(sink)
    assert request(app, "GET", "/boom", params={"access_token": JWT}).status_code == 500
    (event,) = valid(sink.events)
    assert event["attributes"]["token_location"] == "query"


def test_www_authenticate_parsing():
    params = parse_www_authenticate(f'Bearer realm="mcp", error="invalid_token", resource_metadata="{METADATA}", scope=crm:read')
    assert params == {"realm": "mcp", "error": "invalid_token", "resource_metadata": METADATA, "scope": "crm:read"}
    assert parse_www_authenticate("Basic") == {}
