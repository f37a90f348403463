"""Audit middleware for the official MCP Python SDK (``mcp`` 2.x).

Install it on a server with one line::

    from mcpsift.collectors.mcp_sdk import install
    install(server, sink, server_resource="https://mcp.example.com/mcp")

(``server`` is an ``mcp.server.mcpserver.MCPServer`` or a low-level
``mcp.server.lowlevel.Server``; ``sink`` any :class:`~mcpsift.collectors.sink.EventSink`,
e.g. a publisher.) Or pass it yourself: ``MCPServer(..., middleware=[McpsiftMiddleware(sink, ...)])``.

The SDK calls :class:`McpsiftMiddleware` for every inbound JSON-RPC request of
every connection (its ``ServerMiddleware`` chain, ``Server.middleware``),
around validation and the handler. When the request completes, fails or is
refused, the middleware builds one event and submits it:

==========================  =============================================
``initialize``              ``mcp.session_start`` (client info, protocol
                            version, session id); ``mcp.session_end`` when
                            the connection closes
``tools/list``              ``mcp.tools_list`` (each tool with its
                            ``definition_hash`` and annotations)
``tools/call``              ``mcp.tool_call`` (redacted arguments,
                            ``arguments_hash``, the tool's annotations and
                            ``definition_hash`` as listed, outcome, duration,
                            result size and hash, excerpt if configured)
``resources/read``          ``mcp.resource_read``
``prompts/get``             ``mcp.prompt_get``
anything else               ``mcp.request`` (``attributes.method``)
==========================  =============================================

Notifications are not events. Principal and token come from the SDK's auth
context (``get_access_token()``) when the server has auth on; client ip, user
agent and session id from the HTTP request, or from
:class:`~mcpsift.collectors.asgi.McpsiftASGIMiddleware` when it is in front
(it knows the trusted proxies).

Outcome of a tool call: ``ok``; ``error`` when the result has ``isError``
(a ``ToolError`` or a crash in the tool) or the request failed with a
protocol error; ``denied`` when it failed with an ``MCPError`` whose code is in
``denied_codes`` -- by default :data:`DENIED_CODE`, which :class:`ToolDenied`
carries: raise ``ToolDenied("needs scope crm:write", reason="insufficient_scope")``
from a tool (or from a policy middleware) to refuse a call. (A ``ToolError``
cannot mean "denied": the SDK turns it into a result the model reads, and an
ordinary failure looks the same.)

The middleware never raises into the server and never awaits anything of its
own on the request path. On the request path it only captures what the event
needs (about a microsecond); the event is built and submitted by the event
loop a couple of milliseconds later, in a batch with others, in order
(:func:`~mcpsift.collectors.build.defer`; ``defer=False`` builds it before
returning). On the 2026-07-28 protocol (no ``initialize``, no protocol-level
session) there are no session events; every other event is.
"""

from __future__ import annotations

import time
from time import perf_counter
from typing import Any, Awaitable, Callable, Iterable, Optional

from pydantic import BaseModel, ValidationError

try:
    from mcp.server.auth.middleware.auth_context import get_access_token
    from mcp.shared.exceptions import MCPError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mcpsift.collectors.mcp_sdk hooks the official MCP Python SDK: install it with  pip install 'mcp>=2'  "
        "(for fastmcp servers use mcpsift.collectors.fastmcp)"
    ) from exc

from mcpsift.canonical import canonical_json, definition_hash

from .build import EventFactory, current_request, sha256_of
from .sink import EventSink

__all__ = ["McpsiftMiddleware", "ToolDenied", "DENIED_CODE", "install", "tool_definition"]

#: JSON-RPC error code of a refused request (implementation-defined band
#: -32000..-32019; -32000/-32001 are the SDK's, -32002 is retired).
DENIED_CODE = -32003

_STATE_KEY = "mcpsift.session"
_HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
_LOOKUP_INTERVAL_S = 30.0


class ToolDenied(MCPError):
    """Raise from a tool (or a middleware) to refuse a request: the client gets
    a JSON-RPC error with :data:`DENIED_CODE` and the event says ``denied``
    with ``reason`` (a short machine word, e.g. ``insufficient_scope``)."""

    def __init__(self, message: str = "denied", *, reason: Optional[str] = None) -> None:
        super().__init__(DENIED_CODE, message, {"reason": reason} if reason else None)


def tool_definition(tool: Any) -> Optional[dict[str, Any]]:
    """A tool as listed (wire dict or SDK model) as the spec's tool definition,
    with its ``definition_hash``; None if it has no usable name."""
    if isinstance(tool, BaseModel):
        tool = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
    if not isinstance(tool, dict):
        return None
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        return None
    definition: dict[str, Any] = {"name": name}
    description = tool.get("description")
    if isinstance(description, str):
        definition["description"] = description
    schema = tool.get("inputSchema", tool.get("input_schema"))
    if isinstance(schema, dict):
        definition["input_schema"] = schema
    annotations = tool.get("annotations")
    if isinstance(annotations, dict):
        kept = {
            k: v
            for k, v in annotations.items()
            if v is not None and (k not in _HINTS or isinstance(v, bool))
        }
        if kept:
            definition["annotations"] = kept
    definition["definition_hash"] = definition_hash(definition)
    return definition


def _as_dict(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return result


class McpsiftMiddleware:
    """``ServerMiddleware`` that emits one audit event per inbound request.

    ``sink``: where events go (an :class:`EventSink`). ``denied_codes``:
    JSON-RPC error codes that mean "refused" (default ``{DENIED_CODE}``).
    ``tool_lookup``: an async callable returning the server's tools, used to
    know the annotations and ``definition_hash`` of a tool called before the
    client listed tools (:func:`install` passes ``MCPServer.list_tools``).
    Every other keyword is an :class:`~mcpsift.collectors.build.EventFactory`
    option (``server_name``, ``server_resource``, ``tenant``,
    ``fingerprint_key``, ``allow_keys``, ``deny_keys``,
    ``include_result_excerpt``, ...).

    ``stats`` counts submitted / dropped / failed events.
    """

    def __init__(
        self,
        sink: EventSink,
        *,
        denied_codes: Iterable[int] = (DENIED_CODE,),
        tool_lookup: Optional[Callable[[], Awaitable[Iterable[Any]]]] = None,
        **options: Any,
    ) -> None:
        if not options.get("source_name") and not options.get("server_name"):
            options["source_name"] = "mcp-server"
        self.events = EventFactory(sink, **options)
        self.denied_codes = frozenset(denied_codes)
        self._tools: dict[str, tuple[Optional[dict[str, Any]], str]] = {}
        self._tool_lookup = tool_lookup
        self._next_lookup = 0.0
        self._sessionless: dict[tuple[str, str], dict[str, Any]] = {}
        self._recorders: dict[str, Callable[..., Optional[dict[str, Any]]]] = {
            "tools/call": self._tool_call,
            "tools/list": self._tools_list,
            "resources/read": self._resource_read,
            "prompts/get": self._prompt_get,
            "initialize": self._initialize,
        }

    @property
    def stats(self) -> dict[str, int]:
        return self.events.stats

    # -- the ServerMiddleware protocol ------------------------------------------
    async def __call__(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        """Called by the SDK for every inbound message, before validation and
        the handler; returns what the rest of the chain returns, unchanged.
        What the event needs is captured here; the event is built off the
        request path (see :func:`~mcpsift.collectors.build.defer`)."""
        if ctx.request_id is None:  # a notification
            return await call_next(ctx)
        t0 = time.time()
        p0 = perf_counter()
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            self._capture(ctx, t0, p0, None, exc)
            raise
        if self._tool_lookup is not None and ctx.method == "tools/call":
            params = ctx.params
            if params and params.get("name") not in self._tools:
                await self._maybe_lookup(ctx)
        self._capture(ctx, t0, p0, result, None)
        return result

    def _capture(self, ctx: Any, t0: float, p0: float, result: Any, exc: Optional[BaseException]) -> None:
        try:
            duration_ms = (perf_counter() - p0) * 1000.0
            # what only the request's context knows is read now; the rest later
            seen = (self._access_token(), current_request(), self.events.trace())
            if ctx.method == "initialize":
                self._open_session(ctx, result, exc, seen)
            self.events.later(self._record, ctx, t0, duration_ms, result, exc, seen)
        except Exception as err:
            self.events.failed(str(ctx.method), err)

    def _record(
        self, ctx: Any, t0: float, duration_ms: float, result: Any, exc: Optional[BaseException], seen: tuple[Any, ...]
    ) -> None:
        """Build and submit the event of one request (deferred)."""
        method = ctx.method
        try:
            recorder = self._recorders.get(method, self._request)
            event = recorder(ctx, t0, duration_ms, result, exc, seen)
            if event is not None:
                self.events.submit(event)
        except Exception as err:
            self.events.failed(method, err)

    # -- common parts -------------------------------------------------------------
    def _base(
        self, ctx: Any, type_: str, t0: float, seen: tuple[Any, ...], session: Optional[dict[str, Any]] = None
    ) -> dict[str, Any]:
        events = self.events
        event = events.event(type_, t0)
        access, info, _ = seen
        if access is not None:
            raw = getattr(access, "token", None)
            if isinstance(raw, str) and raw:
                principal, token = events.token_parts(raw, access)
                if principal is not None:
                    event["principal"] = principal
                event["token"] = token
        if session is None:
            session = self._session(ctx, info)
        if session is not None:
            event["session"] = session
        network = info.network if info is not None else self._network(ctx)
        if network:
            event["network"] = network
        return event

    def _access_token(self) -> Any:
        """The verified access token of the current request (SDK auth context)."""
        return get_access_token()

    def _network(self, ctx: Any) -> Optional[dict[str, str]]:
        scope = getattr(ctx.request, "scope", None)
        return self.events.network_from_scope(scope) if scope is not None else None

    def _transport(self, ctx: Any, info: Any) -> str:
        if self.events.transport is not None:
            return self.events.transport
        if info is not None:
            return info.transport
        scope = getattr(ctx.request, "scope", None)
        if scope is None:
            return "stdio"
        if b"session_id=" in (scope.get("query_string") or b""):
            return "sse"
        return "streamable-http"

    def _session(self, ctx: Any, info: Any) -> Optional[dict[str, Any]]:
        connection = getattr(ctx.session, "_connection", None)
        state = getattr(connection, "state", None)
        if state is not None:
            cached = state.get(_STATE_KEY)
            if cached is not None:
                return cached
        session_id = getattr(connection, "session_id", None) or (info.session_id if info is not None else None)
        transport = self._transport(ctx, info)
        if not session_id:
            # no protocol-level session (2026-07-28, stateless HTTP): one shared object per kind
            key = (transport, ctx.protocol_version)
            session = self._sessionless.get(key)
            if session is None:
                session = self._sessionless[key] = {"transport": transport, "protocol_version": ctx.protocol_version}
            return session
        session = {"id": session_id, "transport": transport, "protocol_version": ctx.protocol_version}
        if state is not None and getattr(connection, "initialize_accepted", False):
            state[_STATE_KEY] = session
        return session

    def _outcome(
        self, duration_ms: float, exc: Optional[BaseException], error_text: Optional[str] = None
    ) -> dict[str, Any]:
        if exc is None and error_text is None:
            return {"status": "ok", "duration_ms": round(duration_ms, 3)}
        status = "ok"
        reason = None
        if exc is not None:
            status = "error"
            if isinstance(exc, MCPError):
                if exc.error.code in self.denied_codes:
                    status = "denied"
                    data = exc.error.data
                    if isinstance(data, dict) and isinstance(data.get("reason"), str):
                        reason = data["reason"]
                error_text = exc.error.message
            elif isinstance(exc, ValidationError):
                error_text = "invalid request parameters"  # pydantic messages quote the client's input
            elif not isinstance(exc, Exception):
                error_text = "cancelled"
            elif type(exc).__name__ == "ToolError":  # the framework's "expected failure": its message is the error
                error_text = str(exc) or "ToolError"
            else:
                error_text = f"{type(exc).__name__}: {exc}"
        elif error_text is not None:
            status = "error"
        outcome: dict[str, Any] = {"status": status}
        if reason:
            outcome["reason"] = self.events.redactor.scrub_text(reason, 64)
        if error_text:
            outcome["error"] = self.events.redactor.scrub_text(error_text)
        outcome["duration_ms"] = round(duration_ms, 3)
        return outcome

    def _finish(self, event: dict[str, Any], outcome: dict[str, Any], seen: tuple[Any, ...]) -> dict[str, Any]:
        event["outcome"] = outcome
        trace = seen[2]
        if trace is not None:
            event["trace"] = trace
        return event

    # -- per method ---------------------------------------------------------------------
    def _request(
        self, ctx: Any, t0: float, duration_ms: float, result: Any, exc: Optional[BaseException], seen: tuple[Any, ...]
    ) -> dict[str, Any]:
        event = self._base(ctx, "mcp.request", t0, seen)
        self._finish(event, self._outcome(duration_ms, exc), seen)
        event["attributes"] = {"method": self.events.redactor.scrub_text(str(ctx.method), 256)}
        return event

    def _tool_call(
        self, ctx: Any, t0: float, duration_ms: float, result: Any, exc: Optional[BaseException], seen: tuple[Any, ...]
    ) -> dict[str, Any]:
        params = ctx.params or {}
        name = params.get("name")
        if not isinstance(name, str) or not name:
            return self._request(ctx, t0, duration_ms, result, exc, seen)
        arguments = params.get("arguments")
        if not isinstance(arguments, dict):
            arguments = {}
        redactor = self.events.redactor
        raw = canonical_json(arguments)
        tool: dict[str, Any] = {
            "name": name,
            "arguments": redactor.redact_arguments(arguments, source_size=len(raw)),
            "arguments_hash": sha256_of(raw),
        }
        listed = self._tools.get(name)
        if listed is not None:
            annotations, digest = listed
            if annotations is not None:
                tool["annotations"] = annotations
            tool["definition_hash"] = digest
        error_text = None
        if exc is None and result is not None:
            result = _as_dict(result)
            if isinstance(result, dict):
                is_error = result.get("isError") is True
                if "_meta" in result:  # transport stamps (serverInfo), not the tool's answer
                    body = dict(result)
                    del body["_meta"]
                else:
                    body = result
                raw_result = canonical_json(body)
                summary: dict[str, Any] = {"size": len(raw_result), "hash": sha256_of(raw_result), "is_error": is_error}
                if is_error or self.events.include_result_excerpt:
                    text = _result_text(result)
                    if is_error:
                        error_text = text or "tool reported an error"
                    if self.events.include_result_excerpt and text:
                        budget = max(256, redactor.max_event_bytes - len(raw) - 4096)
                        summary["excerpt"] = redactor.scrub_text(text, min(redactor.max_string_bytes, budget))
                tool["result"] = summary
        event = self._base(ctx, "mcp.tool_call", t0, seen)
        event["tool"] = tool
        return self._finish(event, self._outcome(duration_ms, exc, error_text), seen)

    def _tools_list(
        self, ctx: Any, t0: float, duration_ms: float, result: Any, exc: Optional[BaseException], seen: tuple[Any, ...]
    ) -> dict[str, Any]:
        listed = _as_dict(result).get("tools") if exc is None and result is not None else None
        if not isinstance(listed, list):
            return self._request(ctx, t0, duration_ms, result, exc, seen)
        tools = []
        for item in listed:
            definition = tool_definition(item)
            if definition is not None:
                tools.append(definition)
                self._tools[definition["name"]] = (definition.get("annotations"), definition["definition_hash"])
        event = self._base(ctx, "mcp.tools_list", t0, seen)
        event["tools"] = tools
        return self._finish(event, self._outcome(duration_ms, None), seen)

    def _resource_read(
        self, ctx: Any, t0: float, duration_ms: float, result: Any, exc: Optional[BaseException], seen: tuple[Any, ...]
    ) -> dict[str, Any]:
        params = ctx.params or {}
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri:
            return self._request(ctx, t0, duration_ms, result, exc, seen)
        resource: dict[str, Any] = {"uri": self.events.redactor.scrub_text(uri, 2048)}
        contents = _as_dict(result).get("contents") if exc is None and result is not None else None
        if isinstance(contents, list) and contents:
            first = contents[0]
            if isinstance(first, dict) and isinstance(first.get("mimeType"), str):
                resource["mime_type"] = first["mimeType"]
            resource["size"] = sum(_content_size(item) for item in contents)
        event = self._base(ctx, "mcp.resource_read", t0, seen)
        event["resource"] = resource
        return self._finish(event, self._outcome(duration_ms, exc), seen)

    def _prompt_get(
        self, ctx: Any, t0: float, duration_ms: float, result: Any, exc: Optional[BaseException], seen: tuple[Any, ...]
    ) -> dict[str, Any]:
        params = ctx.params or {}
        name = params.get("name")
        if not isinstance(name, str) or not name:
            return self._request(ctx, t0, duration_ms, result, exc, seen)
        event = self._base(ctx, "mcp.prompt_get", t0, seen)
        event["prompt"] = {"name": name}
        self._finish(event, self._outcome(duration_ms, exc), seen)
        arguments = params.get("arguments")
        if isinstance(arguments, dict) and arguments:
            event["attributes"] = {"arguments": self.events.redactor.redact_arguments(arguments)}
        return event

    def _new_session(self, ctx: Any, result: Any, info: Any) -> dict[str, Any]:
        connection = getattr(ctx.session, "_connection", None)
        session: dict[str, Any] = {}
        session_id = getattr(connection, "session_id", None) or (info.session_id if info is not None else None)
        if session_id:
            session["id"] = session_id
        session["transport"] = self._transport(ctx, info)
        version = result.get("protocolVersion") if isinstance(result, dict) else None
        session["protocol_version"] = version if isinstance(version, str) else ctx.protocol_version
        return session

    def _open_session(self, ctx: Any, result: Any, exc: Optional[BaseException], seen: tuple[Any, ...]) -> None:
        """At ``initialize`` (on the request path, once per session): remember
        the session for the connection's later events and arrange for
        ``mcp.session_end`` when the SDK closes the connection."""
        result = _as_dict(result) if exc is None and result is not None else None
        if not isinstance(result, dict):
            return
        session = self._new_session(ctx, result, seen[1])
        connection = getattr(ctx.session, "_connection", None)
        state = getattr(connection, "state", None)
        if state is not None:
            state[_STATE_KEY] = session
        exit_stack = getattr(connection, "exit_stack", None)
        if exit_stack is not None:
            network = seen[1].network if seen[1] is not None else self._network(ctx)
            exit_stack.callback(self._close_session, session, seen, network, perf_counter())

    def _initialize(
        self, ctx: Any, t0: float, duration_ms: float, result: Any, exc: Optional[BaseException], seen: tuple[Any, ...]
    ) -> dict[str, Any]:
        result = _as_dict(result) if exc is None and result is not None else None
        if not isinstance(result, dict):
            return self._request(ctx, t0, duration_ms, None, exc, seen)
        params = ctx.params or {}
        state = getattr(getattr(ctx.session, "_connection", None), "state", None)
        session = (state or {}).get(_STATE_KEY) or self._new_session(ctx, result, seen[1])
        event = self._base(ctx, "mcp.session_start", t0, seen, session)
        self._finish(event, self._outcome(duration_ms, None), seen)
        attributes: dict[str, Any] = {}
        client = params.get("clientInfo")
        if isinstance(client, dict):
            scrub = self.events.redactor.scrub_text
            attributes["client_info"] = {
                key: scrub(client[key], 256) for key in ("name", "version", "title") if isinstance(client.get(key), str)
            }
        requested = params.get("protocolVersion")
        if isinstance(requested, str) and requested != session["protocol_version"]:
            attributes["requested_protocol_version"] = self.events.redactor.scrub_text(requested, 64)
        if attributes:
            event["attributes"] = attributes
        return event

    def _close_session(
        self, session: dict[str, Any], seen: tuple[Any, ...], network: Optional[dict[str, str]], started: float
    ) -> None:
        """Called by the SDK when the connection closes (its exit stack)."""
        try:
            duration_ms = (perf_counter() - started) * 1000.0
            self.events.later(self._session_end, session, seen, network, time.time(), duration_ms)
        except Exception as err:
            self.events.failed("session_end", err)

    def _session_end(
        self,
        session: dict[str, Any],
        seen: tuple[Any, ...],
        network: Optional[dict[str, str]],
        t: float,
        duration_ms: float,
    ) -> None:
        try:
            event = self.events.event("mcp.session_end", t)
            access = seen[0]
            if access is not None and isinstance(getattr(access, "token", None), str):
                principal, _ = self.events.token_parts(access.token, access)
                if principal is not None:
                    event["principal"] = principal
            event["session"] = session
            if network:
                event["network"] = network
            event["attributes"] = {"session_duration_ms": round(duration_ms, 3)}
            self.events.submit(event)
        except Exception as err:
            self.events.failed("session_end", err)

    # -- tool definitions for calls made before a tools/list ------------------------------
    async def _maybe_lookup(self, ctx: Any) -> None:
        params = ctx.params or {}
        name = params.get("name")
        if not isinstance(name, str) or name in self._tools:
            return
        now = time.monotonic()
        if now < self._next_lookup:
            return
        self._next_lookup = now + _LOOKUP_INTERVAL_S
        try:
            tools = await self._tool_lookup()  # type: ignore[misc]
            for item in tools:
                definition = tool_definition(item)
                if definition is not None:
                    self._tools.setdefault(
                        definition["name"], (definition.get("annotations"), definition["definition_hash"])
                    )
        except Exception as err:
            self.events.failed("tool_lookup", err)


def _result_text(result: dict[str, Any]) -> str:
    parts = []
    for item in result.get("content") or ():
        if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            parts.append(item["text"])
    if not parts and result.get("structuredContent") is not None:
        try:
            return canonical_json(result["structuredContent"]).decode("utf-8")
        except (TypeError, ValueError):
            return ""
    return "\n".join(parts)


def _content_size(item: Any) -> int:
    if not isinstance(item, dict):
        return 0
    text = item.get("text")
    if isinstance(text, str):
        return len(text.encode("utf-8", "surrogatepass"))
    blob = item.get("blob")
    if isinstance(blob, str):
        return max(0, len(blob) * 3 // 4 - blob[-2:].count("="))
    return 0


def install(server: Any, sink: EventSink, **options: Any) -> McpsiftMiddleware:
    """Add the audit middleware to an SDK server; returns it (its ``stats``).

    Called once, when the server is built. ``server`` is an ``MCPServer`` or a
    low-level ``Server`` (anything with the SDK's ``middleware`` list). The
    middleware goes right after the SDK's OpenTelemetry middleware (so events
    carry its trace ids) and before every other one (so it sees what they
    refuse). ``server_name`` defaults to the server's name, ``source_version``
    to its version; other options: :class:`McpsiftMiddleware`.
    """
    chain = getattr(server, "middleware", None)
    if not isinstance(chain, list):
        raise TypeError(
            f"install() takes an MCP SDK 2.x MCPServer or Server (with a `middleware` list), got "
            f"{type(server).__name__}; for a fastmcp server use mcpsift.collectors.fastmcp.install"
        )
    if any(isinstance(m, McpsiftMiddleware) for m in chain):
        raise ValueError("the mcpsift middleware is already installed on this server")
    name = getattr(server, "name", None)
    if isinstance(name, str) and name:
        options.setdefault("server_name", name)
    version = getattr(server, "version", None)
    if isinstance(version, str) and version:
        options.setdefault("source_version", version)
    lookup = getattr(server, "list_tools", None)
    if "tool_lookup" not in options and callable(lookup) and _is_async(lookup):
        options["tool_lookup"] = lookup
    middleware = McpsiftMiddleware(sink, **options)
    index = 0
    for i, existing in enumerate(chain):
        if type(existing).__name__ == "OpenTelemetryMiddleware":
            index = i + 1
    chain.insert(index, middleware)
    return middleware


def _is_async(fn: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)
