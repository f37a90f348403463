"""ASGI middleware in front of an MCP server (Starlette, FastAPI, any ASGI app).

Wrap the app (one line)::

    from mcpsift.collectors.asgi import McpsiftASGIMiddleware
    app = McpsiftASGIMiddleware(server.streamable_http_app(), sink,
                                server_name="crm-mcp", trusted_proxies=["10.0.0.0/8"])

(or ``starlette_app.add_middleware(McpsiftASGIMiddleware, sink=sink, ...)``).

The ASGI server calls it for every HTTP request. It

* works out the client ip: the TCP peer, or, when the peer is one of
  ``trusted_proxies`` (CIDRs), the right-most ``X-Forwarded-For`` entry that is
  not a trusted proxy; reads the user agent and ``Mcp-Session-Id``; and makes
  them available (a context variable, see
  :func:`~mcpsift.collectors.build.current_request`) to the SDK middleware and
  the token verifier running inside this request, which put them on their
  events;
* when the response is 401 or 403, emits ``auth.challenge`` (status,
  ``WWW-Authenticate``, its ``resource_metadata`` URL (RFC 9728), its
  ``error`` as ``outcome.reason``, and the presented token's fingerprint if
  there was one);
* when a bearer token is passed in the URI query string (``?access_token=``
  and similar names, or any JWT-shaped value), emits an ``auth.token`` event
  with ``attributes.token_location = "query"`` and the token's fingerprint and
  unverified claims -- unless the auditing token verifier already reported that
  token in this request. It has no ``outcome`` of its own (nothing verified it
  here); ``attributes.http_status`` says how the server answered.

It never changes the request or the response and never raises into the app.
"""

from __future__ import annotations

import re
import time
from typing import Any, Awaitable, Callable, Iterable, MutableMapping, Optional
from urllib.parse import parse_qsl

from .build import EventFactory, RequestInfo, client_ip, reset_current_request, set_current_request
from .sink import EventSink

__all__ = ["McpsiftASGIMiddleware", "QUERY_TOKEN_PARAMS", "parse_www_authenticate"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: query parameter names that carry a bearer token (RFC 6750 §2.3 and common variants)
QUERY_TOKEN_PARAMS = (
    "access_token",
    "token",
    "bearer",
    "bearer_token",
    "auth_token",
    "authorization",
    "id_token",
    "jwt",
    "api_key",
    "apikey",
)

_AUTH_PARAM_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_JWT_SHAPE_RE = re.compile(r"^eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*$")


def parse_www_authenticate(value: str) -> dict[str, str]:
    """The auth-params of a ``WWW-Authenticate`` value (``error``,
    ``resource_metadata``, ``scope`` ...), first occurrence of each."""
    params: dict[str, str] = {}
    for match in _AUTH_PARAM_RE.finditer(value):
        name = match.group(1).lower()
        if name not in params:
            quoted = match.group(2)
            params[name] = quoted.replace('\\"', '"') if quoted is not None else match.group(3)
    return params


class McpsiftASGIMiddleware:
    """See the module doc. ``sink``: an :class:`EventSink`.
    ``trusted_proxies``: CIDRs / addresses whose ``X-Forwarded-For`` is believed.
    ``query_token_params``: parameter names that carry a token in the query.
    ``challenge_statuses``: response statuses that are challenges (401, 403).
    Every other keyword is an :class:`~mcpsift.collectors.build.EventFactory` option.
    """

    def __init__(
        self,
        app: Any,
        sink: EventSink,
        *,
        query_token_params: Iterable[str] = QUERY_TOKEN_PARAMS,
        challenge_statuses: Iterable[int] = (401, 403),
        **options: Any,
    ) -> None:
        if not options.get("source_name") and not options.get("server_name"):
            options["source_name"] = "mcp-server"
        self.app = app
        self.events = EventFactory(sink, **options)
        self.query_token_params = frozenset(p.lower() for p in query_token_params)
        self.challenge_statuses = frozenset(challenge_statuses)

    @property
    def stats(self) -> dict[str, int]:
        return self.events.stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Called by the ASGI server for each connection scope; HTTP requests are
        observed, everything else (lifespan, websockets) passes through."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        try:
            request = self._request_info(scope)
        except Exception as err:  # never let auditing break the app
            self.events.failed("asgi.request", err)
            await self.app(scope, receive, send)
            return
        info, authorization, query_token = request
        # read now: apps and routers may rewrite the scope while they serve it
        target = (str(scope.get("method", "")), str(scope.get("path", "")))
        reset = set_current_request(info)
        t0 = time.time()
        responded = False

        async def observe(message: Message) -> None:
            nonlocal responded
            if message.get("type") == "http.response.start" and not responded:
                responded = True
                self._response(target, info, t0, message, authorization, query_token)
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            if not responded and query_token is not None:
                self._response(target, info, t0, {"status": 500, "headers": []}, authorization, query_token)
            reset_current_request(reset)

    # -- per request -----------------------------------------------------------------
    def _request_info(self, scope: Scope) -> tuple[RequestInfo, Optional[str], Optional[tuple[str, str]]]:
        events = self.events
        agent = session_id = forwarded = authorization = None
        for name, value in scope.get("headers") or ():
            if name == b"user-agent":
                agent = value.decode("latin-1")
            elif name == b"mcp-session-id":
                session_id = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                text = value.decode("latin-1")
                forwarded = text if forwarded is None else forwarded + "," + text
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        client = scope.get("client")
        ip = client_ip(client[0] if client else None, forwarded, events.trusted_proxies)
        network: dict[str, str] = {}
        if ip:
            network["client_ip"] = ip
        if agent:
            network["user_agent"] = events.redactor.scrub_text(agent, 512)
        if session_id is not None and (len(session_id) > 256 or not session_id.isprintable()):
            session_id = None
        info = RequestInfo(
            client_ip=ip,
            user_agent=network.get("user_agent"),
            session_id=session_id,
            transport=events.transport or "streamable-http",
            network=network or None,
        )
        query_token = None
        query = scope.get("query_string") or b""
        if query and b"=" in query:
            query_token = self._query_token(query)
            if query_token is not None:
                info.query_token_fingerprint = events.fingerprint(query_token[1])
        return info, authorization, query_token

    def _query_token(self, query: bytes) -> Optional[tuple[str, str]]:
        """``(parameter, token)`` of a bearer token in the query string, or None."""
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=False):
            if not value:
                continue
            if name.lower() in self.query_token_params or _JWT_SHAPE_RE.match(value):
                if value.lower().startswith("bearer "):
                    value = value[7:].strip()
                return name, value
        return None

    def _response(
        self,
        target: tuple[str, str],
        info: RequestInfo,
        t0: float,
        start: Message,
        authorization: Optional[str],
        query_token: Optional[tuple[str, str]],
    ) -> None:
        try:
            status = int(start.get("status", 0))
            if status in self.challenge_statuses:
                headers = [v for n, v in start.get("headers") or () if n.lower() == b"www-authenticate"]
                self.events.later(self._challenge, target, info, t0, headers, status, authorization)
            if query_token is not None and not info.query_token_reported:
                self.events.later(self._query_token_event, target, info, t0, status, query_token)
        except Exception as err:
            self.events.failed("asgi.response", err)

    def _finish(self, event: dict[str, Any], info: RequestInfo) -> None:
        if info.session_id:
            event["session"] = {"id": info.session_id, "transport": info.transport}
        if info.network:
            event["network"] = info.network

    def _challenge(
        self, target: tuple[str, str], info: RequestInfo, t0: float, challenges: list[bytes], status: int, authorization: Optional[str]
    ) -> None:
        try:
            self._build_challenge(target, info, t0, challenges, status, authorization)
        except Exception as err:
            self.events.failed("asgi.challenge", err)

    def _build_challenge(
        self, target: tuple[str, str], info: RequestInfo, t0: float, challenges: list[bytes], status: int, authorization: Optional[str]
    ) -> None:
        events = self.events
        header = ", ".join(value.decode("latin-1") for value in challenges)
        event = events.event("auth.challenge", t0)
        if authorization and authorization[:7].lower() == "bearer " and authorization[7:].strip():
            _, token = events.token_parts(authorization[7:].strip())
            event["token"] = token
        self._finish(event, info)
        params = parse_www_authenticate(header) if header else {}
        outcome: dict[str, Any] = {"status": "denied"}
        if params.get("error"):
            outcome["reason"] = events.redactor.scrub_text(params["error"], 64)
        event["outcome"] = outcome
        attributes: dict[str, Any] = {"http_status": status}
        if header:
            attributes["www_authenticate"] = events.redactor.scrub_text(header, 2048)
        if params.get("resource_metadata"):
            attributes["resource_metadata"] = events.redactor.scrub_text(params["resource_metadata"], 2048)
        attributes["http_method"] = target[0]
        attributes["path"] = events.redactor.scrub_text(target[1], 1024)
        event["attributes"] = attributes
        events.submit(event)

    def _query_token_event(
        self, target: tuple[str, str], info: RequestInfo, t0: float, status: int, query_token: tuple[str, str]
    ) -> None:
        try:
            self._build_query_token_event(target, info, t0, status, query_token)
        except Exception as err:
            self.events.failed("asgi.query_token", err)

    def _build_query_token_event(
        self, target: tuple[str, str], info: RequestInfo, t0: float, status: int, query_token: tuple[str, str]
    ) -> None:
        events = self.events
        parameter, raw = query_token
        event = events.event("auth.token", t0)
        principal, token = events.token_parts(raw)
        if principal is not None:
            event["principal"] = principal
        event["token"] = token
        self._finish(event, info)
        event["attributes"] = {
            "token_location": "query",
            "query_parameter": events.redactor.scrub_text(parameter, 64),
            "http_status": status,
            "http_method": target[0],
            "path": events.redactor.scrub_text(target[1], 1024),
        }
        events.submit(event)
