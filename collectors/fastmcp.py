"""Audit middleware for fastmcp servers, on fastmcp's own middleware API.

Install it with one line::

    from mcpsift.collectors.fastmcp import install
    install(mcp, sink, server_resource="https://mcp.example.com/mcp")

(``mcp`` is a ``fastmcp.FastMCP``; this is ``mcp.add_middleware(McpsiftFastMCPMiddleware(sink, ...))``.)

fastmcp calls the middleware's ``on_request`` once for every inbound request
(``initialize``, ``tools/list``, ``tools/call``, ``resources/read``,
``prompts/get`` and every other method), around its own typed hooks and the
handler. It emits the same events as the SDK middleware
(:mod:`mcpsift.collectors.mcp_sdk`), built by the same code, from fastmcp's
typed results (``ToolResult``, ``ResourceResult``, ``PromptResult``, ``Tool``).

Outcome of a tool call: ``denied`` when fastmcp refuses it with an
``AuthorizationError`` (``InsufficientScopeError`` gives
``reason: insufficient_scope``) or an ``MCPError`` with a code in
``denied_codes``; ``error`` for a ``ToolError``, any other exception or a
result with ``is_error``. Principal and token come from
``fastmcp.server.dependencies.get_access_token()``.
"""

from __future__ import annotations

import time
from time import perf_counter
from typing import Any, Optional

try:
    from fastmcp.exceptions import AuthorizationError
    from fastmcp.server.dependencies import get_access_token as _fastmcp_access_token
    from fastmcp.server.middleware import Middleware
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mcpsift.collectors.fastmcp hooks fastmcp servers: install it with  pip install fastmcp  "
        "(for servers on the official SDK use mcpsift.collectors.mcp_sdk)"
    ) from exc

from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from .build import current_request
from .mcp_sdk import DENIED_CODE, McpsiftMiddleware
from .sink import EventSink

__all__ = ["McpsiftFastMCPMiddleware", "install"]


class _Ctx:
    """The parts of an SDK request context the recorders read, from fastmcp's."""

    __slots__ = ("method", "params", "request_id", "protocol_version", "request", "session")

    def __init__(self, method: str, params: Any, sdk: Any) -> None:
        self.method = method
        self.params = params  # fastmcp's message until the deferred build turns it into wire params
        self.request_id = getattr(sdk, "request_id", None) or "0"
        self.protocol_version = getattr(sdk, "protocol_version", None) or ""
        self.request = getattr(sdk, "request", None)
        self.session = getattr(sdk, "session", None)


class _AuthorizationDenied(MCPError):
    def __init__(self, exc: BaseException) -> None:
        reason = "insufficient_scope" if "scope" in type(exc).__name__.lower() else "forbidden"
        super().__init__(DENIED_CODE, str(exc) or "denied", {"reason": reason})


class _Recorder(McpsiftMiddleware):
    def _access_token(self) -> Any:
        return _fastmcp_access_token()


def _params(message: Any) -> Any:
    if isinstance(message, BaseModel):
        message = message.model_dump(by_alias=True, mode="json", exclude_none=True)
    if not isinstance(message, dict):
        return None
    # a whole request (root dispatch) carries its params under "params"
    if "method" in message and isinstance(message.get("params"), dict):
        return message["params"]
    return message


def _wire(method: str, result: Any, params: Any) -> Any:
    """fastmcp's typed result as the JSON-RPC result the client receives."""
    if result is None or isinstance(result, dict):
        return result
    if method == "tools/call" and hasattr(result, "to_mcp_result"):
        return result.to_mcp_result()
    if method == "tools/list" and isinstance(result, (list, tuple)):
        return {"tools": [t.to_mcp_tool() if hasattr(t, "to_mcp_tool") else t for t in result]}
    if method == "resources/read" and hasattr(result, "to_mcp_result"):
        return result.to_mcp_result((params or {}).get("uri", ""))
    if method == "prompts/get" and hasattr(result, "to_mcp_prompt_result"):
        return result.to_mcp_prompt_result()
    return result


class McpsiftFastMCPMiddleware(Middleware):
    """fastmcp ``Middleware`` emitting one audit event per request.

    Options as :class:`~mcpsift.collectors.mcp_sdk.McpsiftMiddleware`
    (``server_name``, ``server_resource``, ``tenant``, ``fingerprint_key``,
    ``allow_keys``, ``deny_keys``, ``include_result_excerpt``, ``denied_codes`` ...).
    """

    def __init__(self, sink: EventSink, **options: Any) -> None:
        self._recorder = _Recorder(sink, **options)
        self.events = self._recorder.events

    @property
    def stats(self) -> dict[str, int]:
        return self.events.stats

    async def on_request(self, context: Any, call_next: Any) -> Any:
        """Called by fastmcp once per inbound request, outside its typed hooks;
        captures what the event needs and builds it off the request path."""
        t0 = time.time()
        p0 = perf_counter()
        method = context.method or ""
        try:
            result = await call_next(context)
        except BaseException as exc:
            self._capture(context, method, t0, p0, None, exc)
            raise
        self._capture(context, method, t0, p0, result, None)
        return result

    def _capture(self, context: Any, method: str, t0: float, p0: float, result: Any, exc: Optional[BaseException]) -> None:
        try:
            from fastmcp.server.dependencies import fastmcp_request_ctx

            recorder = self._recorder
            duration_ms = (perf_counter() - p0) * 1000.0
            seen = (recorder._access_token(), current_request(), self.events.trace())
            ctx = _Ctx(method, context.message, fastmcp_request_ctx.get())
            if isinstance(exc, AuthorizationError):
                exc = _AuthorizationDenied(exc)
            if method == "initialize":
                ctx.params = _params(ctx.params)
                recorder._open_session(ctx, _wire(method, result, ctx.params), exc, seen)
            self.events.later(self._build, ctx, t0, duration_ms, result, exc, seen)
        except Exception as err:
            self.events.failed(method or "fastmcp", err)

    def _build(self, ctx: Any, t0: float, duration_ms: float, result: Any, exc: Optional[BaseException], seen: Any) -> None:
        try:
            ctx.params = _params(ctx.params)
            wire = _wire(ctx.method, result, ctx.params) if exc is None else None
        except Exception as err:
            self.events.failed(ctx.method or "fastmcp", err)
            return
        self._recorder._record(ctx, t0, duration_ms, wire, exc, seen)


def install(server: Any, sink: EventSink, **options: Any) -> McpsiftFastMCPMiddleware:
    """Add the audit middleware to a ``fastmcp.FastMCP`` server; returns it.

    Called once, when the server is built. ``server_name`` defaults to the
    server's name, ``source_version`` to its version.
    """
    if not callable(getattr(server, "add_middleware", None)):
        raise TypeError(
            f"install() takes a fastmcp.FastMCP server, got {type(server).__name__}; "
            "for a server on the official MCP SDK use mcpsift.collectors.mcp_sdk.install"
        )
    name = getattr(server, "name", None)
    if isinstance(name, str) and name:
        options.setdefault("server_name", name)
    version = getattr(server, "version", None)
    if isinstance(version, str) and version:
        options.setdefault("source_version", version)
    middleware = McpsiftFastMCPMiddleware(sink, **options)
    server.add_middleware(middleware)
    return middleware
