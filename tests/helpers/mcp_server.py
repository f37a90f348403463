"""A real MCP SDK server for hook tests: JWT bearer auth, a few tools, a
resource and a prompt, served over streamable HTTP by uvicorn on a loopback
port, with every mcpsift hook installed (SDK middleware, auditing token
verifier, ASGI middleware) feeding one sink.

    issuer = JWTIssuer()
    with running_server(sink, issuer) as server:
        token = issuer.mint(audience=server.resource, scopes=["crm:read"])
        results = anyio.run(drive_session, server, token)

The keys are generated per :class:`JWTIssuer` (RSA 2048); tokens are signed
with PyJWT. The server's own verifier (:class:`JWTVerifier`) checks signature,
audience (the server's resource URI), issuer and expiry, and answers None on
any failure, as SDK verifiers do.

Tools: ``find_contact`` (read-only, returns text), ``explode`` (raises: an
``error`` outcome), ``delete_contact`` (refused with ``ToolDenied`` unless the
token has ``crm:write``: a ``denied`` outcome). Resource ``crm://contacts/readme``,
prompt ``summarize_account``. The server requires scope ``crm:read`` (403 without).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "ISSUER",
    "SERVER_NAME",
    "TENANT",
    "FINGERPRINT_KEY",
    "JWTIssuer",
    "JWTVerifier",
    "RunningServer",
    "build_app",
    "running_server",
    "drive_session",
    "http_client",
]

ISSUER = "https://id.acme.example"
SERVER_NAME = "crm-mcp"
TENANT = "acme"
FINGERPRINT_KEY = b"mcpsift-test-fingerprint-key"
USER_AGENT = "assistant-desktop/5.1"


class JWTIssuer:
    """An authorization server's signing key, and tokens signed with it."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self.key.public_key()
        self.kid = uuid.uuid4().hex[:8]

    def mint(
        self,
        *,
        audience: str,
        scopes: tuple[str, ...] | list[str] = ("crm:read",),
        subject: str = "dana@acme.example",
        client_id: str = "https://assistant.example.com/oauth/client.json",
        lifetime_s: int = 3600,
        issued_at: Optional[int] = None,
        key: Any = None,
        jti: Optional[str] = None,
    ) -> str:
        now = int(time.time()) if issued_at is None else issued_at
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "client_id": client_id,
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + lifetime_s,
            "jti": jti or uuid.uuid4().hex[:12],
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})


class JWTVerifier:
    """An SDK ``TokenVerifier``: PyJWT with signature, audience, issuer and expiry checks."""

    def __init__(self, issuer: JWTIssuer, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        try:
            claims = jwt.decode(
                token,
                self.issuer.public_key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer.issuer,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.PyJWTError:
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims["sub"]),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            resource=claims["aud"] if isinstance(claims["aud"], str) else None,
            subject=claims["sub"],
            claims={"iss": claims["iss"], "jti": claims.get("jti")},
        )


def _build_server(sink: Any, issuer: JWTIssuer, resource: str, hook_options: dict[str, Any]) -> Any:
    from mcp.server.auth.middleware.auth_context import get_access_token
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from mcpsift.collectors.mcp_sdk import ToolDenied, install
    from mcpsift.collectors.verifier import AuditingTokenVerifier

    verifier = AuditingTokenVerifier(
        JWTVerifier(issuer, resource), sink, issuers=[issuer.issuer], required_scopes=["crm:read"], **hook_options
    )
    server = MCPServer(
        SERVER_NAME,
        version="2.4.1",
        token_verifier=verifier,
        auth=AuthSettings(
            issuer_url=issuer.issuer,
            resource_server_url=resource,
            required_scopes=["crm:read"],
            validate_token_resource=False,  # the verifier checks the audience itself
        ),
    )

    @server.tool(annotations={"readOnlyHint": True, "openWorldHint": False})
    def find_contact(query: str, api_key: str = "") -> str:
        """Find a contact by name or email."""
        return f"Contact: {query} <jordan.lee@example.com>"

    @server.tool(annotations={"destructiveHint": False})
    def explode(reason: str) -> str:
        """Always fails."""
        raise ToolError(f"exploded: {reason}")

    @server.tool(annotations={"destructiveHint": True})
    def delete_contact(contact_id: str) -> str:
        """Delete a contact (needs crm:write)."""
        access = get_access_token()
        if access is None or "crm:write" not in access.scopes:
            raise ToolDenied("delete_contact needs scope crm:write", reason="insufficient_scope")
        return f"deleted {contact_id}"

    @server.resource("crm://contacts/readme", mime_type="text/plain")
    def readme() -> str:
        return "The CRM contacts directory."

    @server.prompt()
    def summarize_account(account: str) -> str:
        """Summarize an account."""
        return f"Summarize the account {account}."

    middleware = install(server, sink, **hook_options)
    return server, verifier, middleware


def build_app(sink: Any, issuer: JWTIssuer, resource: str, **hook_options: Any) -> tuple[Any, dict[str, Any]]:
    """The ASGI app (MCP server with every hook) and its parts."""
    from mcpsift.collectors.asgi import McpsiftASGIMiddleware

    server, verifier, middleware = _build_server(sink, issuer, resource, hook_options)
    inner = server.streamable_http_app(host="127.0.0.1")
    app = McpsiftASGIMiddleware(inner, sink, **hook_options)
    return app, {"server": server, "verifier": verifier, "middleware": middleware, "asgi": app}


@dataclass
class RunningServer:
    url: str
    resource: str
    port: int
    parts: dict[str, Any] = field(default_factory=dict)


def _hook_options(resource: str, overrides: dict[str, Any]) -> dict[str, Any]:
    options = {
        "server_name": SERVER_NAME,
        "server_resource": resource,
        "tenant": TENANT,
        "source_instance": "crm-mcp-test",
        "source_version": "2.4.1",
        "fingerprint_key": FINGERPRINT_KEY,
    }
    options.update(overrides)
    return options


@contextlib.contextmanager
def running_server(sink: Any, issuer: JWTIssuer, **hook_options: Any) -> Iterator[RunningServer]:
    """Serve the app with uvicorn in a thread on a loopback port held from the
    start (no race for the port); stops it on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    app, parts = build_app(sink, issuer, url, **_hook_options(url, hook_options))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="mcp-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test MCP server did not start (see the log above)")
        time.sleep(0.01)
    try:
        yield RunningServer(url=url, resource=url, port=port, parts=parts)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def http_client(token: Optional[str] = None, **kwargs: Any) -> Any:
    """An ``httpx2.AsyncClient`` as the SDK client uses, with a bearer token."""
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"User-Agent": USER_AGENT}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return create_mcp_http_client(headers=headers, **kwargs)


async def drive_session(server: RunningServer, token: str) -> dict[str, Any]:
    """One session with the SDK's real client: initialize, list tools, call
    ``find_contact`` (ok), ``explode`` (error), ``delete_contact`` (denied),
    read the resource, get the prompt. Returns what the client received."""
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    out: dict[str, Any] = {}
    async with http_client(token) as http:
        async with streamable_http_client(server.url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                out["protocol_version"] = init.protocol_version
                out["tools"] = [t.name for t in (await session.list_tools()).tools]
                out["ok"] = await session.call_tool(
                    "find_contact", {"query": "Jordan Lee", "api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz0123"}
                )
                out["error"] = await session.call_tool("explode", {"reason": "password=Sup3rS3cret!"})
                try:
                    await session.call_tool("delete_contact", {"contact_id": "8812"})
                    out["denied"] = None
                except MCPError as exc:
                    out["denied"] = exc
                out["resource"] = await session.read_resource("crm://contacts/readme")
                out["prompt"] = await session.get_prompt("summarize_account", {"account": "ACME"})
    return out
